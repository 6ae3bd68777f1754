from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from physinv.config import config_to_dict, load_config
from physinv.errors import PhysinvError


@dataclass
class Cfg:
    steps: int = 10
    lr: float = 1e-3
    name: str = "run"
    out: Path = Path("out")
    amp: bool = False
    size: Optional[int] = None
    levels: tuple[int, ...] = (1, 2)


def test_toml_and_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('steps = 20\nlr = 0.5\nout = "x/y"\namp = true\nlevels = [4, 8]\n')
    cfg = load_config(Cfg, toml, lr=None, name="flagged")
    assert cfg == Cfg(steps=20, lr=0.5, name="flagged", out=Path("x/y"), amp=True, levels=(4, 8))
    assert config_to_dict(cfg)["out"] == "x/y"


def test_unknown_key_names_file_and_key(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("stpes = 3\n")
    with pytest.raises(PhysinvError, match=r"c.toml: stpes: unknown key \(known keys: amp, levels, lr"):
        load_config(Cfg, toml)


def test_bad_value_and_bad_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('steps = "many"\n')
    with pytest.raises(PhysinvError, match="c.toml: steps: expected int, got 'many'"):
        load_config(Cfg, toml)
    for bad, message in (("amp = 2", "amp: expected bool, got 2"), ("amp = 0.5", "amp: expected bool, got 0.5"), ("steps = true", "steps: expected int, got True")):
        toml.write_text(bad + "\n")
        with pytest.raises(PhysinvError, match=message):
            load_config(Cfg, toml)
    toml.write_text("amp = 1\n")
    assert load_config(Cfg, toml).amp is True
    toml.write_text("steps = \n")
    with pytest.raises(PhysinvError, match="c.toml: not valid TOML"):
        load_config(Cfg, toml)
    with pytest.raises(PhysinvError, match="missing.toml: config file not found"):
        load_config(Cfg, tmp_path / "missing.toml")
