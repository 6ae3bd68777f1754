"""Results of a command: metrics as ONE JSON object on the last stdout line and in ``metrics.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from physinv.core.train import to_jsonable, atomic_write_bytes


def emit_metrics(metrics: Mapping[str, Any], run_dir: str | Path | None) -> dict[str, Any]:
    """Write ``<run_dir>/metrics.json`` (atomically) and print the metrics as one JSON line.

    Non-finite floats are written as ``null`` so the line is strict JSON. Under torchrun only
    rank 0 writes and prints.
    """
    from physinv.core.distributed import is_main

    clean = _finite(to_jsonable(dict(metrics)))
    if not is_main():  # under torchrun only rank 0 writes and prints
        return clean
    if run_dir is not None:
        atomic_write_bytes(Path(run_dir) / "metrics.json", (json.dumps(clean, indent=2) + "\n").encode())
    print(json.dumps(clean), flush=True)
    return clean


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
