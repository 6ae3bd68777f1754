"""Command configuration: one dataclass per command, filled from a TOML file and CLI flags.

Unknown keys are errors (they are usually typos), and values are coerced to the field's type
with a message that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from physinv.errors import input_error

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

C = TypeVar("C")


def _coerce(value: Any, annotation: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], source, key)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(annotation) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise input_error(source, key, f"expected a list, got {value!r}")
        seq = [_coerce(v, inner, source, key) for v in value]
        return tuple(seq) if origin is tuple else seq
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            raise ValueError  # `flag = 2` or `flag = 0.5` is a mistake, not "true"
        if annotation in (int, float) and isinstance(value, bool):
            raise ValueError  # `steps = true` is not 1
        if annotation in (int, float, str):
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return annotation(value)
        if annotation is Path:
            return Path(value)
    except (TypeError, ValueError):
        raise input_error(source, key, f"expected {annotation.__name__}, got {value!r}") from None
    return value


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Instantiate dataclass ``cls`` from ``values``; unknown keys raise ``PhysinvError``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise input_error(source, key, f"unknown key (known keys: {known})")
        kwargs[name] = _coerce(value, hints[name], source, key)
    return cls(**kwargs)


def load_config(cls: type[C], toml_path: str | Path | None = None, **overrides: Any) -> C:
    """Read ``toml_path`` (if any) into ``cls``; ``overrides`` that are not None win."""
    values: dict[str, Any] = {}
    source = "flags"
    if toml_path is not None:
        path = Path(toml_path)
        source = str(path)
        if not path.is_file():
            raise input_error(path, None, "config file not found")
        try:
            values.update(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as err:
            raise input_error(path, None, f"not valid TOML ({err})") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(cls, values, source)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Dataclass -> plain dict of JSON/TOML/``weights_only``-safe values (Paths become str)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}
