"""Speed of the P1 splitting step: cell-updates per second for batches B × N².

    python benchmarks/p1_speed.py --device cpu --dtype float32 --batch 1 16 64 --grid 64
    python benchmarks/p1_speed.py --device cuda --dtype float32 --batch 512 --grid 128 --compile

One JSON line per configuration (device name, threads, batch, grid, dtype, fixed-point
iterations, cell-updates/s), then a summary line with the best figure. Goals (issue 3):
≥ 2·10⁷ on 2 CPU cores, ≥ 1.5·10¹⁰ batched on an H100.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from physinv.core.train import select_device  # noqa: E402
from physinv.radiative.p1 import P1Params, P1State, make_grid, p1_step, uniform_state  # noqa: E402


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(batch: int, grid: int, dtype: torch.dtype, device: torch.device, iters: int, repeats: int, compile_step: bool) -> float:
    params = P1Params(fixed_point_iters=iters)
    gen = torch.Generator().manual_seed(0)
    rho = (0.1 + torch.rand(batch, grid, grid, generator=gen, dtype=torch.float64)).to(device=device, dtype=dtype)
    g = make_grid(params, grid, grid, device, dtype)
    state = uniform_state(rho.shape, params.a * 5.0**4, 5.0, device, dtype)
    dt = params.time_step(grid)

    def one(E, Fx, Fy, T, rho):
        return tuple(p1_step(P1State(E, Fx, Fy, T), rho, 0.0, dt, params, g))

    step = torch.compile(one, dynamic=False) if compile_step else one
    with torch.no_grad():
        fields = tuple(state)
        for _ in range(3):  # warm-up (and compilation)
            fields = step(*fields, rho)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fields = step(*fields, rho)
        sync(device)
        seconds = time.perf_counter() - t0
    return batch * grid * grid * repeats / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--grid", type=int, nargs="+", default=[64])
    ap.add_argument("--fixed-point-iters", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--compile", action="store_true", help="torch.compile one step")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    dtype = getattr(torch, args.dtype)
    best = 0.0
    for grid in args.grid:
        for batch in args.batch:
            rate = bench(batch, grid, dtype, device, args.fixed_point_iters, args.repeats, args.compile)
            best = max(best, rate)
            print(json.dumps({"device": machine(device), "batch": batch, "grid": grid, "dtype": args.dtype,
                              "fixed_point_iters": args.fixed_point_iters, "compile": args.compile,
                              "cell_updates_per_s": float(f"{rate:.4g}")}), flush=True)
    goal = 1.5e10 if device.type == "cuda" else 2e7
    print(json.dumps({"best_cell_updates_per_s": float(f"{best:.4g}"), "goal": goal, "meets_goal": best >= goal, "device": machine(device)}))


if __name__ == "__main__":
    main()
