"""Training data for the inverse problem: random densities ρ(x, y) and the radiation they produce.

Two density families:

* ``creneaux`` (the internship's "créneaux"): a background density plus one square bump of fixed
  side; the unknowns are its centre (x, y) [cm] and height [g/cm³]. The multi-label
  classification target is the coarse occupancy of an 8 × 8 partition of the domain.
* ``fields`` (the V-Net project: "on reconstruit la totalité de la densité"): half smooth Gaussian
  random fields (white noise filtered by a Gaussian of random correlation length), half sums of
  Gaussian blobs on a random background, both in [rho_min, rho_max].

Observations, simulated with the slides' configuration (T0 = 5 keV, E0 = aT0⁴, the ponctuel
source on the whole left edge, free outflow elsewhere, σa = σc = ρT):

* ``snapshots`` (default): E and T on the whole grid at K evenly spaced times in (0, t_f],
  stacked as channels (E_1..E_K, T_1..T_K) → (B, 2K, N, N);
* ``boundary`` (harder): E on the four edges (l, r, d, u) at S times → (B, 4, S, N).

Data are written shard by shard (``shard_00000.npz``, one batch each, written atomically), so a
killed run resumes where it stopped; ``meta.json`` records the settings and a run with different
settings into the same folder is refused. Shard s is drawn with its own seed (``seed · 1000003 + s``),
so under ``torchrun`` rank r of N simply makes shards r, r + N, ... and the data set is the same
whatever N; when every shard is there, rank 0 writes ``index.json`` (shards and sizes) atomically,
and :func:`load_dataset` reads a finished data set through it. A killed rank's missing shards are
made again by the next run, with any number of processes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physinv.errors import PhysinvError, input_error
from physinv.radiative.p1 import P1Params, simulate

KINDS = ("creneaux", "fields")
OBSERVE = ("snapshots", "boundary")
COARSE = 8  # occupancy grid of the classification target


@dataclass
class DatasetSpec:
    kind: str = "fields"
    n: int = 1000
    grid: int = 64
    observe: str = "snapshots"
    k: int = 4  # snapshot times
    t_final: float = 0.005  # [sh]
    batch: int = 64
    fixed_point_iters: int = 3
    seed: int = 0
    dtype: str = "float32"
    cfl: float = 0.5
    closure: str = "slides"
    boundary_samples: int = 64  # S for observe=boundary
    rho_min: float = 0.1  # fields range [g/cm³]
    rho_max: float = 1.5
    background: float = 0.5  # créneaux background density
    bump_width: float = 0.25  # créneaux side [cm] (domain is the unit square)
    height_min: float = 0.5
    height_max: float = 3.0

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise PhysinvError(f"--kind: must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if self.observe not in OBSERVE:
            raise PhysinvError(f"--observe: must be one of {', '.join(OBSERVE)}, got '{self.observe}'")
        if self.n < 1 or self.batch < 1 or self.k < 1:
            raise PhysinvError("--n, --batch and --k must be >= 1")
        if self.grid < 4:
            raise PhysinvError(f"--grid: must be >= 4, got {self.grid}")
        if self.t_final <= 0:
            raise PhysinvError(f"--t-final: must be > 0, got {self.t_final}")
        if not (0.0 < self.cfl <= 1.0):
            raise PhysinvError(f"--cfl: must be in (0, 1] for stability, got {self.cfl:g}")
        if self.dtype not in ("float32", "float64"):
            raise PhysinvError(f"--dtype: must be float32 or float64, got '{self.dtype}'")

    def params(self) -> P1Params:
        return P1Params(cfl=self.cfl, closure=self.closure, fixed_point_iters=self.fixed_point_iters)

    def snapshot_times(self) -> list[float]:
        return [self.t_final * (i + 1) / self.k for i in range(self.k)]


def coordinates(n: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centre coordinates (Y, X), each (n, n), on the unit square [cm]."""
    c = (torch.arange(n, device=device, dtype=dtype) + 0.5) / n
    return torch.meshgrid(c, c, indexing="ij")


def sample_creneaux(gen: torch.Generator, batch: int, n: int, spec: DatasetSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Square bumps: ρ (B, n, n) and targets (B, 3) = (x centre, y centre [cm], height [g/cm³])."""
    half = spec.bump_width / 2
    u = torch.rand(batch, 3, generator=gen, dtype=torch.float64)
    x = half + (1 - 2 * half) * u[:, 0]
    y = half + (1 - 2 * half) * u[:, 1]
    height = spec.height_min + (spec.height_max - spec.height_min) * u[:, 2]
    Y, X = coordinates(n, dtype=torch.float64)
    inside = ((X[None] - x[:, None, None]).abs() < half) & ((Y[None] - y[:, None, None]).abs() < half)
    rho = spec.background + height[:, None, None] * inside
    return rho, torch.stack([x, y, height], dim=1)


def occupancy(targets: torch.Tensor, spec: DatasetSpec, coarse: int = COARSE) -> torch.Tensor:
    """Multi-label classification target (B, coarse²): 1 where a coarse cell overlaps the bump."""
    half = spec.bump_width / 2
    edges = torch.arange(coarse + 1, dtype=targets.dtype) / coarse
    lo, hi = edges[:-1], edges[1:]
    ox = (targets[:, 0:1] - half < hi) & (targets[:, 0:1] + half > lo)  # (B, coarse)
    oy = (targets[:, 1:2] - half < hi) & (targets[:, 1:2] + half > lo)
    return (oy[:, :, None] & ox[:, None, :]).reshape(len(targets), -1).float()


def _gaussian_random_field(gen: torch.Generator, batch: int, n: int) -> torch.Tensor:
    if batch == 0:  # MKL's FFT rejects empty batches
        return torch.zeros(0, n, n, dtype=torch.float64)
    noise = torch.randn(batch, n, n, generator=gen, dtype=torch.float64)
    length = 0.04 + 0.14 * torch.rand(batch, 1, 1, generator=gen, dtype=torch.float64)  # [cm]
    freq = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)  # cycles per unit length
    k2 = (2 * math.pi) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2)
    field = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-0.5 * k2[None] * length**2)).real
    field = field - field.mean(dim=(-2, -1), keepdim=True)
    return field / field.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def _blobs(gen: torch.Generator, batch: int, n: int, max_blobs: int = 6) -> torch.Tensor:
    Y, X = coordinates(n, dtype=torch.float64)
    count = torch.randint(1, max_blobs + 1, (batch,), generator=gen)
    out = torch.zeros(batch, n, n, dtype=torch.float64)
    for m in range(max_blobs):
        u = torch.rand(batch, 4, generator=gen, dtype=torch.float64)
        cx, cy = u[:, 0], u[:, 1]
        width = 0.04 + 0.14 * u[:, 2]
        amp = (0.3 + 0.7 * u[:, 3]) * (m < count).double()
        r2 = (X[None] - cx[:, None, None]) ** 2 + (Y[None] - cy[:, None, None]) ** 2
        out = out + amp[:, None, None] * torch.exp(-0.5 * r2 / width[:, None, None] ** 2)
    return out


def sample_fields(gen: torch.Generator, batch: int, n: int, spec: DatasetSpec) -> torch.Tensor:
    """Random densities (B, n, n) in [rho_min, rho_max]: first half smooth random fields, second half blobs."""
    n_grf = batch // 2
    lo, hi = spec.rho_min, spec.rho_max
    grf = lo + (hi - lo) * torch.sigmoid(1.5 * _gaussian_random_field(gen, n_grf, n))
    background = torch.rand(batch - n_grf, 1, 1, generator=gen, dtype=torch.float64) * 0.3
    blobs = (lo + (hi - lo) * (background + _blobs(gen, batch - n_grf, n))).clamp(lo, hi)
    return torch.cat([grf, blobs])


def observe_batch(rho: torch.Tensor, spec: DatasetSpec, params: P1Params | None = None, compile: bool = False,
                  checkpoint_every: int | None = None) -> torch.Tensor:
    """Simulate densities ``rho`` (B, N, N) and return the observations (see module docstring).

    params: the solver parameters (default ``spec.params()``; pass the same object across calls
    with ``compile=True`` so the compiled step is reused). checkpoint_every: differentiable runs
    recompute the solver by chunks of that many steps in the backward pass (flat memory).
    """
    params = params or spec.params()
    if spec.observe == "snapshots":
        traj = simulate(rho, params, spec.t_final, save_times=spec.snapshot_times(), checkpoint_every=checkpoint_every, compile=compile)
        return torch.cat([traj.E, traj.T], dim=0).transpose(0, 1)  # (B, 2K, N, N)
    n_steps = max(1, math.ceil(spec.t_final / params.time_step(rho.shape[-1]) - 1e-9))
    every = max(1, n_steps // spec.boundary_samples)
    traj = simulate(rho, params, spec.t_final, boundary_every=every, checkpoint_every=checkpoint_every, compile=compile)
    edges = traj.boundary[:, 1 : spec.boundary_samples + 1]  # (B, S, 4, N), t = 0 dropped
    return edges.transpose(1, 2).contiguous()  # (B, 4, S, N)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate_dataset(
    spec: DatasetSpec, out: str | Path, device: torch.device | str = "cpu", quiet: bool = False, compile: bool = False
) -> dict[str, Any]:
    """Write ``ceil(n / batch)`` shards into ``out``; existing complete shards are kept (resume).

    compile: advance the solver with ``torch.compile`` (a one-off compilation, then ~4× faster on CPU).
    """
    from physinv.core import distributed
    from physinv.core.train import atomic_write_bytes, progress_bar

    spec.validate()
    device = distributed.setup(torch.device(device))
    out = Path(out)
    n_shards = math.ceil(spec.n / spec.batch)
    mine = distributed.rank_items(n_shards, "shards", "or a smaller --batch: one shard per batch")
    meta_path = out / "meta.json"
    meta = {"spec": asdict(spec), "snapshot_times": spec.snapshot_times(), "format": 1}
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if not meta_path.is_file():
            atomic_write_bytes(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    distributed.barrier()  # meta.json exists before any rank reads it
    old = json.loads(meta_path.read_text())
    if old.get("spec") != meta["spec"]:
        diff = sorted(k for k in meta["spec"] if old.get("spec", {}).get(k) != meta["spec"][k])
        raise input_error(meta_path, ", ".join(diff), "this folder holds a dataset made with other settings (use another --out)")
    dtype = torch.float32 if spec.dtype == "float32" else torch.float64
    t0 = time.perf_counter()
    done = skipped = 0
    cells = 0
    params = spec.params()
    n_steps = max(1, math.ceil(spec.t_final / params.time_step(spec.grid) - 1e-9))
    with progress_bar(disable=quiet or not distributed.is_main()) as bar:
        task = bar.add_task(f"dataset {spec.kind}", total=len(mine), info="")
        for shard in mine:
            path = out / shard_name(shard)
            size = min(spec.batch, spec.n - shard * spec.batch)
            if path.is_file():
                skipped += 1
                bar.update(task, advance=1)
                continue
            gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + shard)
            arrays: dict[str, np.ndarray] = {}
            if spec.kind == "creneaux":
                rho, targets = sample_creneaux(gen, size, spec.grid, spec)
                arrays["targets"] = targets.float().numpy()
                arrays["labels"] = occupancy(targets, spec).numpy().astype(np.uint8)
            else:
                rho = sample_fields(gen, size, spec.grid, spec)
            with torch.no_grad():
                obs = observe_batch(rho.to(device=device, dtype=dtype), spec, params, compile)
            arrays["rho"] = rho.float().numpy()
            arrays["obs"] = obs.float().cpu().numpy()
            _atomic_savez(path, **arrays)
            done += 1
            cells += size * spec.grid * spec.grid * n_steps
            rate = cells / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, advance=1, info=f"{rate:.3g} cell-updates/s")
    seconds = time.perf_counter() - t0
    done, skipped, cells = (int(v) for v in distributed.reduce_sequence_sum([done, skipped, cells]))  # waits for every rank
    distributed.merge_index(out / "index.json", lambda: dataset_index(out, spec))
    return {
        "out": str(out), "n": spec.n, "shards": n_shards, "generated_shards": done, "skipped_shards": skipped,
        "steps_per_simulation": n_steps, "seconds": round(seconds, 2), "processes": distributed.world_size(),
        "cell_updates_per_s": cells / seconds if done else None,
    }


def shard_name(shard: int) -> str:
    return f"shard_{shard:05d}.npz"


def dataset_index(out: Path, spec: DatasetSpec) -> dict[str, Any]:
    """The content of ``index.json``: every shard with its sample count (written once all shards
    exist: the mark of a finished data set); a missing shard is an error naming it."""
    n_shards = math.ceil(spec.n / spec.batch)
    shards = [{"file": shard_name(s), "n": min(spec.batch, spec.n - s * spec.batch)} for s in range(n_shards)]
    missing = [e["file"] for e in shards if not (out / e["file"]).is_file()]
    if missing:
        raise input_error(out, missing[0], f"shard missing ({len(missing)} of {n_shards}); run the same command again to make it")
    return {"n": spec.n, "shards": shards}


def load_dataset(folder: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Concatenate the shards of a dataset folder: arrays (rho, obs[, targets, labels]) and meta."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise input_error(folder, "meta.json", "not a radiative dataset folder (run `physinv radiative dataset` first)")
    meta = json.loads(meta_path.read_text())
    index = folder / "index.json"
    if index.is_file():  # a finished data set: exactly its shards, in order
        shards = [folder / e["file"] for e in json.loads(index.read_text())["shards"]]
        for path in shards:
            if not path.is_file():
                raise input_error(index, path.name, "listed shard is missing")
    else:  # still being made (or made before index.json existed): the shards there are
        shards = sorted(folder.glob("shard_*.npz"))
    if not shards:
        raise input_error(folder, None, "the dataset has no shards yet")
    parts: dict[str, list[np.ndarray]] = {}
    for path in shards:
        with np.load(path) as z:
            for key in z.files:
                parts.setdefault(key, []).append(z[key])
    return {k: np.concatenate(v) for k, v in parts.items()}, meta


def split_indices(n: int, split: str, held_out: float = 0.1) -> np.ndarray:
    """Deterministic split: the last ``held_out`` fraction is the test set."""
    n_test = max(1, int(round(n * held_out))) if n > 1 else 0
    if split == "train":
        return np.arange(0, n - n_test)
    if split == "test":
        return np.arange(n - n_test, n)
    if split == "all":
        return np.arange(n)
    raise PhysinvError(f"--split: must be train, test or all, got '{split}'")
