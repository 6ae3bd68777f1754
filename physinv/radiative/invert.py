"""Inversion through the differentiable solver (beyond the presentation).

Optimise the density map so that the simulated observations match the given ones::

    min_s  Σ_c ‖(obs_c(ρ) − obs*_c)/scale_c‖² / n  +  w_TV · TV(ρ),   ρ = softplus(s) > 0

``obs_c`` are the same observations the data set holds (E and T snapshots, or E on the edges),
simulated with the data set's settings; ``scale_c`` is the spread of the target channel (so E
and T weigh alike); TV is the isotropic total variation (mean over cells, smoothed by ε).
The start is ``zero`` (ρ ≈ 0.01), ``uniform`` (the middle of the data set's range) or a trained
V-Net/U-Net run's prediction. The loop is :func:`physinv.core.train.fit` (progress, resume);
the solver keeps memory flat with ``checkpoint_every`` (recomputes chunks in the backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from physinv.errors import PhysinvError, input_error
from physinv.radiative.data import DatasetSpec, observe_batch


@dataclass
class InvertSpec:
    steps: int = 100
    max_minutes: float | None = None
    tv: float = 1e-4
    lr: float = 0.03
    solver_chunk: int | None = 25  # steps per recomputed chunk (torch.utils.checkpoint); None: keep the whole graph
    dtype: str = "float32"


def softplus_inverse(y: Tensor) -> Tensor:
    """s with softplus(s) = y (y > 0)."""
    return y + torch.log(-torch.expm1(-y))


def total_variation(rho: Tensor, eps: float = 1e-4) -> Tensor:
    """Isotropic TV of (B, N, N) maps: mean over cells of sqrt(∂x² + ∂y² + ε²), forward differences."""
    dx = rho[..., :-1, 1:] - rho[..., :-1, :-1]
    dy = rho[..., 1:, :-1] - rho[..., :-1, :-1]
    return torch.sqrt(dx * dx + dy * dy + eps * eps).mean()


class DensityParameter(nn.Module):
    """ρ = softplus(s), s: (B, N, N) — positivity without a projection step."""

    def __init__(self, rho_init: Tensor):
        super().__init__()
        self.s = nn.Parameter(softplus_inverse(rho_init.clamp_min(1e-3)))

    def forward(self) -> Tensor:
        return torch.nn.functional.softplus(self.s)


def simulate_observations(rho: Tensor, spec: DatasetSpec, chunk: int | None = None) -> Tensor:
    """Observations (B, C, N, N) of densities ``rho`` (B, N, N), differentiable in ``rho``:
    :func:`physinv.radiative.data.observe_batch` recomputed by chunks of ``chunk`` solver steps in
    the backward pass (memory-flat; None keeps every step)."""
    return observe_batch(rho, spec, checkpoint_every=chunk)


def invert_density(
    obs: Tensor,
    spec: DatasetSpec,
    rho_init: Tensor,
    inv: InvertSpec,
    run_dir: str | Path,
    truth: Tensor | None = None,
    quiet: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """Recover ρ (B, N, N) from observations ``obs`` (B, C, N, N) on their device; returns (ρ, metrics)."""
    from physinv.core.metrics import relative_l2
    from physinv.core.train import fit

    if spec.observe != "snapshots":
        raise PhysinvError("invert: only snapshot observations are supported (dataset --observe snapshots)")
    dtype = torch.float32 if inv.dtype == "float32" else torch.float64
    obs = obs.to(dtype)
    param = DensityParameter(rho_init.to(device=obs.device, dtype=dtype))
    opt = torch.optim.Adam(param.parameters(), lr=inv.lr)
    scale = obs.std(dim=(-2, -1), keepdim=True).clamp_min(1e-3 * obs.abs().mean())

    def misfit(rho: Tensor) -> Tensor:
        return (((simulate_observations(rho, spec, inv.solver_chunk) - obs) / scale) ** 2).mean()

    def step_fn(step: int) -> dict[str, float]:
        rho = param()
        data_term = misfit(rho)
        loss = data_term + inv.tv * total_variation(rho)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out = {"loss": loss.detach(), "misfit": data_term.detach()}
        if truth is not None:
            out["rel_l2"] = relative_l2(rho.detach(), truth)
        return out

    with torch.no_grad():
        misfit0 = float(misfit(param()))
    result = fit(step_fn, run_dir=run_dir, steps=inv.steps, state={"rho": param, "opt": opt}, max_minutes=inv.max_minutes,
                 checkpoint_every=max(1, min(25, inv.steps)), log_every=5, desc="invert", quiet=quiet)
    with torch.no_grad():
        rho = param()
        metrics = {"misfit_initial": misfit0, "misfit_final": float(misfit(rho)), "steps": result.step,
                   "stopped_by": result.stopped_by, "seconds": round(result.elapsed_s, 1)}
    return rho.detach(), metrics


def density_metrics(pred: Tensor, truth: Tensor, data_range: float) -> dict[str, float]:
    """R², relative L2 and SSIM (window over the last two axes, ``data_range`` in density units) of
    density maps ``pred`` vs ``truth`` (B, N, N), computed in float64 on the CPU."""
    from physinv.core.metrics import r2_score, relative_l2, ssim

    pred, truth = pred.double().cpu(), truth.double().cpu()
    return {"r2": float(r2_score(pred, truth)), "relative_l2": float(relative_l2(pred, truth)),
            "ssim": float(ssim(pred[..., None], truth[..., None], data_range=data_range))}


def invert_cli(obs_path: Path, out: Path, init: str | None, index: int, inv: InvertSpec, device: str, count: int = 1) -> dict[str, Any]:
    """``physinv radiative invert``: invert ``count`` samples of a data set ending at ``index``."""
    from physinv.core.train import select_device
    from physinv.radiative.data import load_dataset
    from physinv.radiative.learn import DENSE, load_run, plot_maps, predict, prepare_inputs

    dev = select_device(device)
    folder = obs_path if obs_path.is_dir() else obs_path.parent
    arrays, meta = load_dataset(folder)
    spec = DatasetSpec(**meta["spec"])
    n = len(arrays["rho"])
    last = index % n if -n <= index < n else None
    if last is None:
        raise input_error(obs_path, "--index", f"out of range for {n} samples")
    idx = np.arange(max(0, last - count + 1), last + 1)
    obs = torch.as_tensor(arrays["obs"][idx]).to(dev)
    truth = torch.as_tensor(arrays["rho"][idx]).double()
    lo, hi = spec.rho_min, spec.rho_max
    if spec.kind == "creneaux":
        lo, hi = spec.background, spec.background + spec.height_max
    init_name = str(init) if init is not None else "uniform"
    if init_name == "zero":
        rho0 = torch.full_like(truth, 1e-2)
    elif init_name == "uniform":
        rho0 = torch.full_like(truth, 0.5 * (lo + hi))
    else:
        model, norm, config = load_run(Path(init_name), dev)
        if config["model"] not in DENSE:
            raise input_error(init, "model", f"--init needs a density model run (vnet or unet), got {config['model']}")
        rho0 = predict(model, norm, prepare_inputs(arrays["obs"][idx], spec.grid), dev)[:, 0].double().clamp_min(1e-3)
    rho, metrics = invert_density(obs, spec, rho0.to(dev), inv, out, truth=truth.to(dev))
    rng = hi - lo
    metrics.update({f"init_{k}": v for k, v in density_metrics(rho0, truth, rng).items()})
    metrics.update(density_metrics(rho, truth, rng))
    metrics.update({"init": init_name, "indices": idx.tolist()})
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "rho.npy", rho.cpu().numpy())
    plot_maps(truth.float().cpu(), rho.float().cpu(), out / "invert.png",
              titles=("truth ρ", "inverted", "error"))
    plot_maps(truth.float().cpu(), rho0.float().cpu(), out / "init.png", titles=("truth ρ", f"start ({init_name})", "error"))
    metrics["plot"] = str(out / "invert.png")
    return metrics
