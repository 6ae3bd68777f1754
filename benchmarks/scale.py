"""Samples per second of ``radiative dataset`` and ``radiative train`` on 1 and 2 processes (torchrun).

    python benchmarks/scale.py                        # CPU, Gloo: 1 and 2 processes
    python benchmarks/scale.py --device cuda --procs 1 2 4 --samples 4096 --grid 64   # NCCL, one GPU per process

Each configuration runs the real commands under ``torchrun --standalone --nproc-per-node P`` into
a fresh folder and reads their JSON line: data generation counts the samples simulated over the
command's own seconds (start-up excluded), training the global batch × steps over the training
seconds. One JSON line per (stage, processes), then a summary with the speed-ups. Every process
runs torch on ``--threads`` threads (default 1, so 1 and P processes differ only in the split; two
processes with 2 threads each on a 2-core machine oversubscribe it). On CPU the processes share
the machine's cores, so the figures say how the work splits, not what more machines would give.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p1_speed import machine  # noqa: E402


def run(procs: int, argv: list[str], threads: int) -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--nproc-per-node={procs}", "-m", "physinv", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PHYSINV_DIST_TIMEOUT": "120"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    return {**json.loads(line), "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--samples", type=int, default=256, help="simulations in the data set")
    ap.add_argument("--batch", type=int, default=16, help="simulations per shard")
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--t-final", type=float, default=0.002)
    ap.add_argument("--steps", type=int, default=60, help="training steps")
    ap.add_argument("--batch-size", type=int, default=32, help="global training batch")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--keep", type=Path, default=None, help="keep the folders here (default: a temporary folder)")
    args = ap.parse_args()

    import torch

    root = args.keep or Path(tempfile.mkdtemp(prefix="physinv-scale-"))
    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    rates: dict[str, dict[int, float]] = {"dataset": {}, "train": {}}
    reference = None
    try:
        for p in args.procs:
            threads = args.threads
            data = root / f"data_{p}"
            shutil.rmtree(data, ignore_errors=True)
            d = run(p, ["radiative", "dataset", "--kind", "creneaux", "--samples", str(args.samples), "--batch", str(args.batch),
                        "--grid", str(args.grid), "--t-final", str(args.t_final), "--k", "2", "--out", str(data),
                        "--device", args.device], threads)
            rates["dataset"][p] = args.samples / d["seconds"]
            same = None
            if reference is None:
                reference = data
            else:  # the point of the split: the same data set whatever the number of processes
                same = all((data / f.name).read_bytes() == f.read_bytes() for f in sorted(reference.glob("shard_*.npz")))
            print(json.dumps({"stage": "dataset", "processes": p, "threads_per_process": threads, "samples": args.samples,
                              "grid": args.grid, "seconds": d["seconds"], "wall_s": d["wall_s"],
                              "samples_per_s": round(rates["dataset"][p], 2), "identical_to_first": same}), flush=True)
            run_dir = root / f"run_{p}"
            shutil.rmtree(run_dir, ignore_errors=True)
            t = run(p, ["radiative", "train", str(reference), "--model", "cnn", "--steps", str(args.steps),
                        "--batch-size", str(args.batch_size), "--out", str(run_dir), "--device", args.device], threads)
            rates["train"][p] = args.steps * args.batch_size / t["train_seconds"]
            print(json.dumps({"stage": "train", "model": "cnn", "processes": p, "threads_per_process": threads,
                              "global_batch": args.batch_size, "steps": t["steps"], "train_seconds": t["train_seconds"],
                              "wall_s": t["wall_s"], "samples_per_s": round(rates["train"][p], 2), "r2": round(t["r2"], 4)}), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    base = args.procs[0]
    print(json.dumps({
        "summary": True, "machine": machine(dev), "device": args.device, "threads_per_process": args.threads, "load_1min": round(os.getloadavg()[0], 2),
        "speedup": {stage: {str(p): round(r[p] / r[base], 2) for p in r} for stage, r in rates.items()},
    }))


if __name__ == "__main__":
    main()
