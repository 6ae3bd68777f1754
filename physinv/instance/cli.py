"""``physinv instance``: Instance-NeRF — NeRF-RCNN on generated scenes, and the instance field of a trained NeRF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from physinv.cli_common import Device, MaxMinutes, Quiet, Seed, Steps

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
    scenes_per_step: Annotated[Optional[int], typer.Option("--scenes-per-step", help="global batch, split over the processes under torchrun (default: one scene per process)")] = None,
    device: Device = "auto",
    seed: Seed = 0,
) -> None:
    """Train NeRF-RCNN; prints AP@0.25, AP@0.5 and mask IoU on the held-out scenes as one JSON line."""
    from physinv.core.train import select_device
    from physinv.instance.detector import train_detector
    from physinv.io.runs import emit_metrics

    emit_metrics(train_detector(scenes, out, steps=2000 if steps is None else steps, max_minutes=max_minutes, held_out=held_out,
                                lr=lr, device=select_device(device), seed=seed, scenes_per_step=scenes_per_step), out)


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


@app.command("fit")
def fit_cmd(
    nerf_run: Annotated[Path, typer.Argument(help="a trained `physinv nerf train` run folder")],
    data: Annotated[Path, typer.Option("--data", help="the data set the NeRF was trained on (train split)")],
    masks: Annotated[Path, typer.Option("--masks", help="folder of 2D instance masks, one PNG per training view")],
    out: Annotated[Path, typer.Option("--out", help="run folder; an existing run resumes")],
    steps: Steps = None,
    max_minutes: MaxMinutes = None,
    detector: Annotated[Optional[Path], typer.Option("--detector", help="NeRF-RCNN file or run (default: data/instance/detector.pt)")] = None,
    matching: Annotated[str, typer.Option("--matching", help="greedy (the paper: best IoU > 0.05) | hungarian")] = "greedy",
    smoothness: Annotated[float, typer.Option("--smoothness", help="weight of the depth-weighted smoothness term (0 = off)")] = 1.0,
    refine: Annotated[bool, typer.Option("--refine/--no-refine", help="superpixel refinement of the rendered masks, then retraining")] = True,
    direct: Annotated[bool, typer.Option("--direct", help="ablation: no detector or matching, train on the raw ids")] = False,
    score_threshold: Annotated[float, typer.Option("--score-threshold", help="NeRF-RCNN detections kept (the paper: 0.5)")] = 0.5,
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Instance-NeRF: detect 3D instances in the NeRF, match the 2D masks to them, train the instance field."""
    from physinv.core.train import select_device
    from physinv.instance.pipeline import InstanceConfig, fit_instance
    from physinv.io.runs import emit_metrics

    cfg = InstanceConfig(matching=matching, smoothness=smoothness, refine=refine, direct=direct, score_threshold=score_threshold, seed=seed)
    if steps is not None:
        cfg.steps = steps
    emit_metrics(fit_instance(nerf_run, data, masks, out, cfg, detector=detector, max_minutes=max_minutes,
                              device=select_device(device), quiet=quiet), None)


@app.command("eval")
def eval_cmd(
    run: Annotated[Path, typer.Argument(help="an instance run folder")],
    data: Annotated[Optional[Path], typer.Option("--data", help="data set with instance maps (default: the run's)")] = None,
    split: Annotated[str, typer.Option("--split", help="split to score")] = "test",
    device: Device = "auto",
) -> None:
    """Score rendered instance maps: pq (per view), pq_scene, miou (Hungarian) as one JSON line (+ metrics.json)."""
    from physinv.core.train import select_device
    from physinv.instance.pipeline import evaluate_instance
    from physinv.io.runs import emit_metrics

    emit_metrics(evaluate_instance(run, data, split, select_device(device)), run)


@app.command("render")
def render_cmd(
    run: Annotated[Path, typer.Argument(help="an instance run folder")],
    out: Annotated[Path, typer.Option("--out", help="folder for the instance maps")],
    data: Annotated[Optional[Path], typer.Option("--data", help="data set whose poses to render (default: the run's)")] = None,
    split: Annotated[str, typer.Option("--split")] = "test",
    meshes: Annotated[bool, typer.Option("--meshes/--no-meshes", help="also export each instance as a mesh")] = True,
    device: Device = "auto",
) -> None:
    """Write ``ids_###.png`` (16-bit ids), ``vis_###.png`` (colours) per view and ``instance_<k>.ply`` per instance."""
    from physinv.core.train import select_device
    from physinv.instance.export import render_run
    from physinv.io.runs import emit_metrics

    emit_metrics(render_run(run, out, data, split, meshes, select_device(device)), None)
