"""``physinv radiative``: simulate, dataset, train, eval, invert."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from physinv.cli_common import Device, MaxMinutes, Out, Seed, Steps
from physinv.errors import PhysinvError

app = typer.Typer(help="Grey P1 radiative transfer: solver, data, V-Net, inversion.", no_args_is_help=True)

DType = Annotated[str, typer.Option("--dtype", help="float64 | float32 (float32 only checked against float64; for CUDA speed)")]


def _dtype(name: str):
    import torch

    table = {"float64": torch.float64, "float32": torch.float32}
    if name not in table:
        raise PhysinvError(f"--dtype: must be float64 or float32, got '{name}'")
    return table[name]


@app.command()
def simulate(
    config: Annotated[Path, typer.Argument(help="key–value configuration file (the presentation's format)")],
    out: Annotated[Optional[Path], typer.Option("--out", help="folder for relative export paths (default: current folder)")] = None,
    device: Device = "cpu",
    dtype: DType = "float64",
) -> None:
    """Run one simulation from a configuration file; write the CSV data frame and the .npz of all fields."""
    from physinv.core.train import select_device
    from physinv.io.runs import emit_metrics
    from physinv.radiative.configfile import export, load_simulation_config, run_simulation
    from physinv.radiative.p1 import make_grid

    cfg = load_simulation_config(config)
    dev = select_device(device)
    t0 = time.perf_counter()
    traj = run_simulation(cfg, dev, _dtype(dtype))
    seconds = time.perf_counter() - t0
    written = export(cfg, traj, out)
    ny, nx = cfg.rho.shape
    h = make_grid(cfg.params, ny, nx).h
    energy = ((traj.E[:, 0] + cfg.rho.to(traj.E) * cfg.params.Cv * traj.T[:, 0]).sum(dim=(-2, -1)) * h * h).tolist()
    emit_metrics(
        {
            "steps": traj.steps, "dt": traj.dt, "t_f": traj.times[-1], "grid": [ny, nx],
            "energy_initial": energy[0], "energy_final": energy[-1],
            "E_mean_final": traj.E[-1].mean().item(), "T_mean_final": traj.T[-1].mean().item(),
            "seconds": round(seconds, 3), "cell_updates_per_s": traj.steps * ny * nx / max(seconds, 1e-9),
            **written,
        },
        None,
    )


@app.command()
def dataset(
    kind: Annotated[str, typer.Option("--kind", help="creneaux (square bumps: x, y, height) | fields (random smooth fields and blobs)")] = "fields",
    n: Annotated[int, typer.Option("--n", "--samples", help="number of simulations (--samples under torchrun, whose parser takes --n for its own --nnodes/--nproc-per-node)")] = 1000,
    grid: Annotated[int, typer.Option("--grid", help="cells per side N (the V-Net needs a multiple of 16)")] = 64,
    out: Out = Path("data/radiative/fields"),
    observe: Annotated[str, typer.Option("--observe", help="snapshots (E and T at K times) | boundary (E on the four edges over time)")] = "snapshots",
    k: Annotated[int, typer.Option("--k", help="number of snapshot times")] = 4,
    t_final: Annotated[float, typer.Option("--t-final", help="final time [sh]")] = 0.005,
    batch: Annotated[int, typer.Option("--batch", help="simulations per batch (one shard file each)")] = 64,
    fixed_point_iters: Annotated[int, typer.Option("--fixed-point-iters", help="step-1 fixed-point iterations (fixed count)")] = 3,
    cfl: Annotated[float, typer.Option("--cfl", help="CFL number in (0, 1] (slides: 0.5)")] = 0.5,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the solver step (one-off compilation, then faster)")] = False,
    device: Device = "auto",
    dtype: DType = "float32",
    seed: Seed = 0,
) -> None:
    """Generate (density, observation) pairs by batched simulation; resumable shard by shard."""
    from physinv.core.train import select_device
    from physinv.io.runs import emit_metrics
    from physinv.radiative.data import DatasetSpec, generate_dataset

    spec = DatasetSpec(kind=kind, n=n, grid=grid, observe=observe, k=k, t_final=t_final, batch=batch,
                       fixed_point_iters=fixed_point_iters, seed=seed, dtype=dtype, cfl=cfl)
    summary = generate_dataset(spec, out, select_device(device), compile=compile)
    emit_metrics(summary, None)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="dataset folder written by `physinv radiative dataset`")],
    model: Annotated[str, typer.Option("--model", help="vnet (MONAI V-Net, whole ρ map) | unet (light residual U-Net, whole ρ map) | cnn (regression of x, y, height) | cnn-class (coarse occupancy)")] = "vnet",
    out: Out = Path("runs/radiative"),
    steps: Steps = 2000,
    max_minutes: MaxMinutes = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="global batch: split evenly over the processes under torchrun")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate")] = 1e-3,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="fine-tune: start from this run's weights (new schedule)")] = None,
    class_weight: Annotated[str, typer.Option("--class-weight", help="cnn-class: none | balanced (positives weighed by negatives/positives per cell)")] = "none",
    device: Device = "auto",
    seed: Seed = 0,
) -> None:
    """Train a model on a dataset (last 10 % held out); resumes from <out>/checkpoint.pt."""
    from physinv.radiative.learn import TrainSpec, train_model

    spec = TrainSpec(model=model, steps=2000 if steps is None else steps, max_minutes=max_minutes, batch_size=batch_size, lr=lr, seed=seed,
                     init_from=str(init_from) if init_from else None, class_weight=class_weight)
    train_model(data, out, spec, device)


@app.command("eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="training run folder")],
    data: Annotated[Path, typer.Argument(help="dataset folder")],
    split: Annotated[str, typer.Option("--split", help="test (last 10 %) | all")] = "test",
    device: Device = "auto",
) -> None:
    """Evaluate a trained run: R², relative L2, SSIM (V-Net) or per-target R² / accuracy (CNN); plots."""
    from physinv.io.runs import emit_metrics
    from physinv.radiative.learn import evaluate_run

    emit_metrics(evaluate_run(run, data, split, device), run)


@app.command()
def invert(
    obs: Annotated[Path, typer.Argument(help="a dataset folder (or one of its shard files) holding the observations")],
    out: Out = Path("runs/radiative-invert"),
    init: Annotated[str, typer.Option("--init", help="zero | uniform | a trained vnet/unet run folder to start from")] = "uniform",
    index: Annotated[int, typer.Option("--index", help="last sample of the dataset to invert (-1: the last one, in the held-out split)")] = -1,
    count: Annotated[int, typer.Option("--count", help="number of samples inverted together (one batch)")] = 1,
    steps: Steps = 100,
    max_minutes: MaxMinutes = None,
    tv: Annotated[float, typer.Option("--tv", help="weight of the total-variation regulariser")] = 1e-4,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate on log ρ")] = 0.03,
    device: Device = "auto",
) -> None:
    """Recover ρ by optimising it through the differentiable solver (ρ = softplus(s) > 0, TV regulariser)."""
    from physinv.io.runs import emit_metrics
    from physinv.radiative.invert import InvertSpec, invert_cli

    # no --seed: the inversion draws nothing at random (deterministic start, full-batch gradient)
    spec = InvertSpec(steps=100 if steps is None else steps, max_minutes=max_minutes, tv=tv, lr=lr)
    emit_metrics(invert_cli(obs, out, init, index, spec, device, count), out)
