"""``physinv nerf``: train, eval, render and mesh a radiance field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from physinv.cli_common import ConfigFile, Device, MaxMinutes, OptionalSeed, Quiet, Steps
from physinv.config import load_config
from physinv.core.train import select_device
from physinv.errors import PhysinvError, input_error
from physinv.io.runs import emit_metrics
from physinv.nerf.config import METHODS, NerfConfig

app = typer.Typer(no_args_is_help=True, help="Neural radiance fields: faithful NeRF and a fast hash-grid model.")

RunOut = Annotated[Path, typer.Option("--out", help="run folder (checkpoint, log, metrics); an existing run resumes")]


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="data folder with transforms_train.json (and transforms_test.json)")],
    out: RunOut,
    method: Annotated[Optional[str], typer.Option("--method", help="nerf | ngp | plain")] = None,
    steps: Steps = None,
    max_minutes: MaxMinutes = None,
    batch_rays: Annotated[Optional[int], typer.Option("--batch-rays", help="rays per step (default: per method and device)")] = None,
    appearance_dim: Annotated[Optional[int], typer.Option("--appearance-dim", help="ngp/plain: a learnt code of this size per `light` of the views (NeRF-A; 0 = off)")] = None,
    device: Device = "auto",
    seed: OptionalSeed = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
) -> None:
    """Train (or resume) a radiance field; prints the final metrics as one JSON line."""
    from physinv.nerf.train import train as run_train

    if method is not None and method not in METHODS:
        raise PhysinvError(f"--method: unknown method '{method}' (known: {', '.join(METHODS)})")
    if not data.is_dir():
        raise input_error(data, None, "data folder not found")
    cfg = load_config(NerfConfig, config, method=method, steps=steps, batch_rays=batch_rays, seed=seed, appearance_dim=appearance_dim)
    result = run_train(data, out, cfg, device=select_device(device), max_minutes=max_minutes, quiet=quiet)
    emit_metrics(
        {
            "method": result.config.method,
            "step": result.fit.step,
            "stopped_by": result.fit.stopped_by,
            "train_seconds": round(result.fit.elapsed_s, 2),
            "train_psnr": result.fit.last.get("psnr"),
            "eval_psnr": result.eval_psnr,
            "kept_step": result.kept_step,
        },
        out,
    )


@app.command("eval")
def eval_cmd(
    run: Annotated[Path, typer.Argument(help="run folder written by `physinv nerf train`")],
    data: Annotated[Optional[Path], typer.Option("--data", help="data folder (default: the one the run was trained on)")] = None,
    split: Annotated[str, typer.Option("--split", help="split to score")] = "test",
    device: Device = "auto",
) -> None:
    """PSNR and SSIM on every view of a split; one JSON line (also <run>/metrics.json)."""
    from physinv.nerf.api import evaluate, load_run

    r = load_run(run, select_device(device))
    data = data or r.data
    if data is None:
        raise PhysinvError("--data: the run does not record its data folder; pass --data")
    emit_metrics(evaluate(r, data, split), run)


@app.command()
def render(
    run: Annotated[Path, typer.Argument(help="run folder")],
    out: Annotated[Path, typer.Option("--out", help="folder for the images and the orbit GIF")],
    data: Annotated[Optional[Path], typer.Option("--data", help="render this data set's test poses (default: an orbit)")] = None,
    split: Annotated[str, typer.Option("--split")] = "test",
    orbit: Annotated[int, typer.Option("--orbit", help="frames of the generated orbit when no --data")] = 36,
    elevation: Annotated[float, typer.Option("--elevation", help="orbit elevation, degrees")] = 25.0,
    device: Device = "auto",
) -> None:
    """RGB, depth and opacity images of test poses or an orbit, plus an animated GIF."""
    from physinv.nerf.render import render_views

    result = render_views(run, out, data=data, split=split, orbit_frames=orbit, elevation_deg=elevation, device=select_device(device))
    emit_metrics(result, None)


@app.command()
def mesh(
    run: Annotated[Path, typer.Argument(help="run folder")],
    out: Annotated[Path, typer.Option("--out", help="output mesh file (.ply, .obj, .glb)")],
    res: Annotated[int, typer.Option("--res", help="lattice resolution per axis")] = 256,
    level: Annotated[Optional[float], typer.Option("--level", help="density iso-level (default: ln 2 / cell size)")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="data folder with meshes/scene.ply for the Chamfer distance (default: the run's)")] = None,
    device: Device = "auto",
) -> None:
    """Marching cubes of the density; Chamfer distance to the ground-truth mesh when the data has one."""
    from physinv.nerf.api import extract_mesh, load_run, mesh_chamfer

    if res < 8:
        raise PhysinvError(f"--res: must be >= 8, got {res}")
    r = load_run(run, select_device(device))
    m = extract_mesh(r, res, level)
    out.parent.mkdir(parents=True, exist_ok=True)
    m.export(out)
    metrics: dict = {"mesh": str(out), "vertices": int(len(m.vertices)), "faces": int(len(m.faces))}
    data = data or r.data
    gt = Path(data) / "meshes" / "scene.ply" if data is not None else None
    if gt is not None and gt.is_file():
        metrics.update(mesh_chamfer(m, gt))
    emit_metrics(metrics, run)
