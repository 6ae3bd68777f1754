"""``physinv sft``: synth, fit, eval (φ-SfT cloth reconstruction from a monocular video)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from physinv.cli_common import ConfigFile, Device, MaxMinutes, OptionalSeed, Out, Quiet, Steps
from physinv.errors import input_error

app = typer.Typer(help="phi-SfT: cloth reconstruction through a differentiable simulator.", no_args_is_help=True)


@app.command()
def synth(
    out: Out = Path("data/sft/seq0"),
    seed: Annotated[int, typer.Option("--seed", help="random seed (material, wind, handle motion, texture)")] = 0,
    frames: Annotated[int, typer.Option("--frames", help="number of frames")] = 40,
    res: Annotated[int, typer.Option("--res", help="image width and height in px")] = 256,
    template_n: Annotated[int, typer.Option("--template-n", help="template vertices per side (17: 289 vertices)")] = 17,
    sim_n: Annotated[int, typer.Option("--sim-n", help="simulated vertices per side (finer than the template; (sim_n-1) a multiple of (template_n-1))")] = 33,
    spp: Annotated[int, typer.Option("--spp", help="Mitsuba samples per pixel")] = 16,
    substeps: Annotated[int, typer.Option("--substeps", help="ground-truth simulation steps per frame")] = 4,
    quiet: Quiet = False,
) -> None:
    """Simulate and render a textured square cloth sequence with ground truth (Mitsuba 3)."""
    from physinv.io.runs import emit_metrics
    from physinv.sft.data import SynthConfig, synthesize_sequence

    cfg = SynthConfig(frames=frames, res=res, template_n=template_n, sim_n=sim_n, spp=spp, substeps=substeps, seed=seed)
    emit_metrics(synthesize_sequence(out, cfg, progress=not quiet), None)


@app.command()
def fit(
    data: Annotated[Path, typer.Argument(help="sequence folder (frames/, masks/, camera.json, template.obj, texture.png)")],
    out: Out = Path("runs/sft"),
    steps: Steps = None,
    max_minutes: MaxMinutes = None,
    no_correctives: Annotated[bool, typer.Option("--no-correctives", help="ablation: no corrective forces")] = False,
    no_adaptive: Annotated[bool, typer.Option("--no-adaptive", help="ablation: all frames active from the start")] = False,
    no_silhouette: Annotated[bool, typer.Option("--no-silhouette", help="ablation: photometric term only")] = False,
    only_correctives: Annotated[bool, typer.Option("--only-correctives", help="the Only-F baseline: per-vertex offsets, no physics")] = False,
    fit_res: Annotated[Optional[int], typer.Option("--fit-res", help="fitting image width in px (0: the data's)")] = None,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="use the first N frames only")] = None,
    device: Device = "auto",
    seed: OptionalSeed = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
) -> None:
    """Recover material, wind, corrective forces and the surface of every frame (resumes a killed run)."""
    from physinv.config import load_config
    from physinv.io.runs import emit_metrics
    from physinv.sft.fit import SftFitConfig, run_fit

    if not data.is_dir():
        raise input_error(data, None, "sequence folder not found")
    flags = {"steps": steps, "fit_res": fit_res, "max_frames": max_frames, "seed": seed, "device": device if device != "auto" else None}
    for name, on in (("correctives", no_correctives), ("adaptive", no_adaptive), ("silhouette", no_silhouette)):
        if on:
            flags[name] = False
    if only_correctives:
        flags["only_correctives"] = True
    cfg = load_config(SftFitConfig, config, **flags)
    emit_metrics(run_fit(data, out, cfg, max_minutes=max_minutes, quiet=quiet), out)


@app.command("eval")
def eval_cmd(
    run: Annotated[Path, typer.Argument(help="run folder written by `physinv sft fit` (meshes/0000.obj ...)")],
    data: Annotated[Path, typer.Argument(help="sequence folder with gt_points/ or gt_meshes/")],
) -> None:
    """Chamfer (x1e4, aligned as the paper and unaligned), e_3D, normal angle; one JSON line."""
    from physinv.io.runs import emit_metrics
    from physinv.sft.evaluate import evaluate_run

    if not run.is_dir():
        raise input_error(run, None, "run folder not found")
    emit_metrics(evaluate_run(run, data), run)
