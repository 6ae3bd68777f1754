"""Demo section: one P1 simulation (fields over time) and one density reconstruction through the solver.

Sized for < 2 min on 2 CPU cores: a 48 × 48 simulation with the slides' configuration, then the
inversion of a 16 × 16 density from its E and T snapshots, starting from a uniform guess.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from physinv.core.train import LOG_NAME, JsonlLog
from physinv.radiative.data import DatasetSpec, observe_batch, sample_creneaux, sample_fields
from physinv.radiative.invert import InvertSpec, density_metrics, invert_density
from physinv.radiative.p1 import P1Params, simulate


def demo_section(report, work_dir: str | Path, device: torch.device, seed: int = 0) -> dict:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    sec = report.section(
        "Radiative transfer (grey P1, splitting scheme)",
        "Forward problem: the slides' configuration (c = 299 cm/sh, a = 0.01372, Cv = 0.14361, T0 = 5 keV, "
        "σa = σc = ρT, source E* = aT0⁴ + 5 sin(2kπt) on the left edge, free outflow elsewhere), solved by "
        "the splitting scheme: implicit exchange step with the fixed point on T, then asymptotic-preserving "
        "finite volumes. Inverse problem: recover ρ(x, y) from snapshots of E and T.",
    )
    # 1. one simulation
    n = 48
    spec_cr = DatasetSpec(kind="creneaux")
    rho_cr, targets = sample_creneaux(gen, 1, n, spec_cr)
    rho_fields = sample_fields(gen, 2, n, DatasetSpec())[1:]  # a blob field
    rho = torch.cat([rho_cr, rho_fields]).to(device=device, dtype=dtype)
    params = P1Params(fixed_point_iters=3)
    times = [0.0025, 0.005, 0.0075, 0.01]
    t0 = time.perf_counter()
    with torch.no_grad():
        traj = simulate(rho, params, 0.01, save_times=times)
    sim_seconds = time.perf_counter() - t0
    cells = traj.steps * rho.numel()
    for b, name in enumerate(["créneau", "random blobs"]):
        e_lo, e_hi = float(traj.E[:, b].min()), float(traj.E[:, b].max())
        sec.image(rho[b].flip(0), f"density ρ ({name}), g/cm³", scale=3, cmap="magma")
        sec.images([(traj.E[s, b].flip(0), f"E at t = {t:g} sh") for s, t in enumerate(traj.times)], scale=3, vmin=e_lo, vmax=e_hi)
        sec.images([(traj.T[s, b].flip(0), f"T at t = {t:g} sh") for s, t in enumerate(traj.times)]
                   + [((traj.Fx[-1, b] ** 2 + traj.Fy[-1, b] ** 2).sqrt().flip(0), "|F| at t_f")], scale=3)
    sec.text(f"{traj.steps} steps of Δt = {traj.dt:.3g} sh on {n}×{n} cells, batch of 2: {sim_seconds:.1f} s "
             f"({cells / sim_seconds:.3g} cell-updates/s, {dtype}, {device}).")
    # 2. one reconstruction through the differentiable solver
    spec = DatasetSpec(kind="fields", grid=16, t_final=0.006, k=4, cfl=0.9, fixed_point_iters=3)
    truth = sample_fields(gen, 1, 16, spec).to(device=device, dtype=dtype)
    with torch.no_grad():
        obs = observe_batch(truth, spec)
    start = torch.full_like(truth, 0.8)
    inv = InvertSpec(steps=80, lr=0.08, tv=1e-3, dtype="float64" if dtype == torch.float64 else "float32", solver_chunk=None)
    rho_hat, inv_metrics = invert_density(obs, spec, start, inv, work_dir / "invert", truth=truth, quiet=True)
    rng = spec.rho_max - spec.rho_min
    before = density_metrics(start, truth, rng)
    after = density_metrics(rho_hat, truth, rng)
    sec.images([(truth[0].flip(0), "truth ρ"), (start[0].flip(0), "start (uniform)"), (rho_hat[0].flip(0), "inverted ρ"),
                ((rho_hat[0] - truth[0]).abs().flip(0), "|error|")], scale=8, vmin=0.0, vmax=spec.rho_max)
    log = [r for r in JsonlLog(work_dir / "invert" / LOG_NAME).read() if "misfit" in r]
    if log:
        sec.plot([r["step"] for r in log], {"misfit": [r["misfit"] for r in log], "relative L2 of ρ": [r["rel_l2"] for r in log]},
                 xlabel="iteration", caption="inversion through the solver", logy=True)
    sec.table([{"": "start", **before}, {"": "inverted", **after}], caption="density error (16×16, E and T at 4 times)")
    return {"sim_cell_updates_per_s": cells / sim_seconds, "invert_r2": after["r2"], "invert_relative_l2": after["relative_l2"],
            "start_relative_l2": before["relative_l2"], "misfit_reduction": inv_metrics["misfit_initial"] / max(inv_metrics["misfit_final"], 1e-30)}

