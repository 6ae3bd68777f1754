"""``physinv instance``: Instance-NeRF — NeRF-RCNN on generated scenes, and the instance field of a trained NeRF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from physinv.cli_common import Device, MaxMinutes, Seed, Steps

app = typer.Typer(help="Instance-NeRF: 3D instance segmentation of a trained NeRF.", no_args_is_help=True)


@app.command("make-scenes")
def make_scenes(
    out: Annotated[Path, typer.Option("--out", help="folder for scene_*.npz and index.json")],
    count: Annotated[int, typer.Option("--count", help="number of scenes")] = 200,
    res: Annotated[int, typer.Option("--res", help="grid voxels per side (the scene box is a cube)")] = 64,
    clean: Annotated[bool, typer.Option("--clean/--artefacts", help="grids without NeRF-like artefacts")] = False,
    seed: Seed = 0,
) -> None:
    """Procedural scenes of primitives as radiance + alpha grids with boxes, classes and 3D masks."""
    from physinv.instance.scenes import write_scenes
    from physinv.io.runs import emit_metrics

    emit_metrics(write_scenes(out, count, res=res, seed=seed, artefacts=not clean), out)


@app.command("train-detector")
def train_detector_cmd(
    scenes: Annotated[Path, typer.Argument(help="folder written by `physinv instance make-scenes`")],
    out: Annotated[Path, typer.Option("--out", help="run folder (checkpoint, log, detector.pt, metrics.json)")],
    steps: Steps = 2000,
    max_minutes: MaxMinutes = None,
    held_out: Annotated[int, typer.Option("--held-out", help="last N scenes kept for evaluation")] = 10,
    lr: Annotated[float, typer.Option("--lr", help="peak learning rate (5 %% warm-up, cosine decay)")] = 1e-3,
    device: Device = "auto",
    seed: Seed = 0,
) -> None:
    """Train NeRF-RCNN; prints AP@0.25, AP@0.5 and mask IoU on the held-out scenes as one JSON line."""
    from physinv.core.train import select_device
    from physinv.instance.detector import train_detector
    from physinv.io.runs import emit_metrics

    emit_metrics(train_detector(scenes, out, steps=steps or 2000, max_minutes=max_minutes, held_out=held_out, lr=lr,
                                device=select_device(device), seed=seed), out)


@app.command("eval-detector")
def eval_detector_cmd(
    scenes: Annotated[Path, typer.Argument(help="folder written by `physinv instance make-scenes`")],
    detector: Annotated[Optional[Path], typer.Option("--detector", help="detector file or run (default: the shipped one)")] = None,
    device: Device = "auto",
) -> None:
    """AP@0.25, AP@0.5 and mask IoU of a detector on every scene of a folder (one JSON line)."""
    from physinv.core.train import select_device
    from physinv.instance.detector import evaluate_detector, load_detector
    from physinv.instance.scenes import list_scenes, load_scene
    from physinv.io.runs import emit_metrics

    dev = select_device(device)
    model = load_detector(detector, dev)
    emit_metrics(evaluate_detector(model, [load_scene(f) for f in list_scenes(scenes)], dev), None)
