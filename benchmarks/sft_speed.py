"""φ-SfT speed benchmark: one generated 40-frame sequence with a 289-vertex template at 256²,
fitted by ``physinv sft fit`` (the issue's target: ≤ 60 min on 2 CPU cores; the paper: 16–24 h on a GPU).

Prints one JSON object: wall seconds of the fit, iterations done, seconds per iteration with the
full window (all frames active: simulation + rendering + backward), the final Chamfer ×1e4.

    python benchmarks/sft_speed.py --threads 2                       # the full fit (up to --max-minutes)
    python benchmarks/sft_speed.py --steps 3 --no-adaptive           # per-iteration cost at the full window only
    python benchmarks/sft_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from physinv.core.train import JsonlLog
from physinv.sft.data import SynthConfig, synthesize_sequence
from physinv.sft.evaluate import evaluate_run
from physinv.sft.fit import SftFitConfig, run_fit


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--fit-res", type=int, default=256)
    ap.add_argument("--template-n", type=int, default=17)
    ap.add_argument("--sim-n", type=int, default=33)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--max-minutes", type=float, default=60.0)
    ap.add_argument("--no-adaptive", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("bench_sft_speed"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.out / "seq"
    t0 = time.perf_counter()
    if not (data / "meta.json").is_file():
        synthesize_sequence(data, SynthConfig(frames=args.frames, res=args.res, template_n=args.template_n, sim_n=args.sim_n, seed=0), progress=False)
    synth_s = time.perf_counter() - t0
    run = args.out / f"run_{args.device}_{args.fit_res}"
    cfg = SftFitConfig(steps=args.steps, fit_res=args.fit_res, device=args.device, adaptive=not args.no_adaptive, checkpoint_every=50)
    r = run_fit(data, run, cfg, max_minutes=args.max_minutes, quiet=True)
    log = [x for x in JsonlLog(run / "log.jsonl").read() if "active_frames" in x]
    full = [x for x in log if x["active_frames"] == args.frames]
    per_iter = None
    if len(full) >= 2:
        per_iter = (full[-1]["time_s"] - full[0]["time_s"]) / max(full[-1]["step"] - full[0]["step"], 1)
    m = evaluate_run(run, data)
    out = {"frames": args.frames, "template_vertices": args.template_n**2, "fit_res": args.fit_res, "device": args.device,
           "threads": torch.get_num_threads(), "synth_seconds": round(synth_s, 1), "fit_seconds": r["seconds"], "steps": r["steps"],
           "stopped_by": r["stopped_by"], "seconds_per_iteration_full_window": per_iter, "chamfer": m["chamfer"],
           "chamfer_unaligned": m["chamfer_unaligned"], "chamfer_template": m["chamfer_template"]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
