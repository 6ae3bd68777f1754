"""NeRF speed benchmark: `ngp`, the `plain` hash-grid configuration and the faithful `nerf` on one scene.

Prints one JSON object: for each method the held-out PSNR at fixed wall-clock training budgets,
the training time needed to reach given PSNRs, steps/s and samples per ray. The curve is that of
the model a user would get at each point: for ``ngp`` and ``plain`` the one early stopping keeps
(best PSNR on the 1 % of training pixels held out); the last step's weights are reported beside it
(``psnr_at_seconds_last_weights``) with the best PSNR any evaluated weights reached. Training time excludes
the periodic evaluations (each logs its own duration). The scene is the built-in Mitsuba scene
(64x64, 100 training / 10 test views) unless --data is given.

    python benchmarks/nerf_speed.py --budgets 60,120 --methods ngp,plain --threads 2   # CPU, short
    python benchmarks/nerf_speed.py --methods nerf --nerf-batch-rays 256 --budgets 300  # faithful NeRF on a CPU
    python benchmarks/nerf_speed.py --device cuda                              # GPU: 8192 rays/step, bf16

Plain configuration (the reference): hash grid 16 levels x 2 features, T = 2^19, 128 uniform
stratified samples per ray inside the scene box, 8192 rays/step, bf16 autocast on CUDA, no
occupancy grid (CPU: 1024 rays x 64 samples), and the pure-PyTorch hash-grid encoding
(``--plain-backend``, default ``torch``): an independent reference, not sped up by physinv's
fused CPU kernel, which ``ngp`` uses (``hash_backend = auto``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from physinv.core.train import LOG_NAME, JsonlLog, select_device
from physinv.nerf.api import evaluate, load_run
from physinv.nerf.config import NerfConfig
from physinv.nerf.train import eval_curve, train


def summarise(points, budgets, targets) -> dict:
    """Held-out PSNR at each wall-clock budget (s) and seconds to reach each target PSNR (dB) of an
    :func:`eval_curve`; None where the run ended first."""
    at_budget = {}
    for b in budgets:
        before = [p for t, p, _ in points if t <= b]
        at_budget[str(b)] = round(before[-1], 3) if before else None
    reach = {}
    for target in targets:
        hit = [t for t, p, _ in points if p >= target]
        reach[str(target)] = round(hit[0], 1) if hit else None
    return {"psnr_at_seconds": at_budget, "seconds_to_psnr": reach}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="data folder (default: synthesize the built-in scene)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "physinv_nerf_speed", help="scratch folder for the data and runs")
    ap.add_argument("--methods", default="ngp,plain,nerf")
    ap.add_argument("--budgets", default="60,120,300,600", help="wall-clock training budgets, seconds")
    ap.add_argument("--targets", default="25,28,30,32,33,34,35,36", help="PSNRs (dB) whose time to reach is reported")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--eval-every", type=int, default=0, help="steps between PSNR evaluations (0: per method)")
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--views", type=int, default=100)
    ap.add_argument("--nerf-batch-rays", type=int, default=None, help="rays per step of the faithful nerf (default: the paper's 4096; a CPU needs far fewer)")
    ap.add_argument("--set", action="append", default=[], help="extra config key=value for every method (repeatable)")
    ap.add_argument("--plain-backend", default="torch", help="hash-grid backend of the plain reference (torch | auto | fused)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    budgets = [float(b) for b in args.budgets.split(",")]
    targets = [float(t) for t in args.targets.split(",")]
    data = args.data
    if data is None:
        from physinv.synth.scene import synthesize

        data = args.work / f"scene_{args.res}_{args.views}"
        if not (data / "transforms_test.json").is_file():
            synthesize(data, views=args.views, test_views=10, res=args.res, spp=64, seed=0, progress=False)
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key] = json.loads(value) if value[:1] in "0123456789-.[tf" else value
    result = {"device": str(device), "torch_threads": torch.get_num_threads(), "data": str(data), "budgets_s": budgets, "methods": {}}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    for method in args.methods.split(","):
        run = args.work / f"run_{method}"
        shutil.rmtree(run, ignore_errors=True)
        eval_every = args.eval_every or (50 if method == "nerf" else 100) * (1 if device.type == "cpu" else 5)
        overrides = dict(extra)
        if method == "plain":
            overrides.setdefault("hash_backend", args.plain_backend)
        if method == "nerf" and args.nerf_batch_rays:
            overrides["batch_rays"] = args.nerf_batch_rays
        cfg = NerfConfig(method=method, steps=10**7, eval_every=eval_every, checkpoint_every=10**7, **overrides)
        t0 = time.perf_counter()
        res = train(data, run, cfg, device=device, max_minutes=max(budgets) / 60.0, quiet=True)
        wall = time.perf_counter() - t0
        log = JsonlLog(run / LOG_NAME).read()
        points = eval_curve(log)  # the model a user gets at each point (early stopping's kept one)
        last_weights = eval_curve(log, kept=False)  # the last step's weights at each point
        best_t, best_psnr, _ = max(last_weights, key=lambda p: p[1]) if last_weights else (None, None, None)
        spr = [r["samples_per_ray"] for r in log if "samples_per_ray" in r]
        train_s = points[-1][0] if points else wall
        final = evaluate(load_run(run, device), data, "test")
        result["methods"][method] = {
            **summarise(points, budgets, targets),
            "psnr_at_seconds_last_weights": summarise(last_weights, budgets, [])["psnr_at_seconds"],
            "best_psnr_any_weights": round(best_psnr, 3) if best_psnr is not None else None,
            "best_at_s": round(best_t, 1) if best_t is not None else None,
            "kept_step": res.kept_step,
            "steps": res.fit.step,
            "steps_per_s": round(res.fit.step / max(train_s, 1e-9), 3),
            "rays_per_step": res.config.batch_rays,
            "samples_per_ray_last": round(spr[-1], 2) if spr else None,
            "final_test_psnr": round(final["psnr"], 3),
            "final_test_ssim": round(final["ssim"], 4),
            "curve": [(round(t, 1), round(p, 3)) for t, p, _ in points],
        }
        print(json.dumps({method: {k: v for k, v in result["methods"][method].items() if k != "curve"}}), file=sys.stderr, flush=True)
    result["ngp_vs_plain"] = speedup(result["methods"], max(budgets))
    print(json.dumps(result))
    return result


def speedup(methods: dict, budget: float) -> dict | None:
    """The issue's figure: plain's held-out PSNR at ``budget`` seconds, the training time ``ngp``
    needs to reach it, and their ratio (None when a method is missing or ngp never reaches it)."""
    if "plain" not in methods or "ngp" not in methods:
        return None
    target = methods["plain"]["psnr_at_seconds"][str(budget)]
    if target is None:
        return None
    reached = [t for t, p in methods["ngp"]["curve"] if p >= target]
    seconds = reached[0] if reached else None
    return {"plain_psnr": target, "plain_seconds": budget, "ngp_seconds": seconds, "ratio": round(budget / seconds, 2) if seconds else None}


if __name__ == "__main__":
    main()
