"""Relighting quality: PhySG (small preset) vs an ``ngp`` NeRF baseline under a light unseen in training.

Data: the built-in Mitsuba scene at 64x64 (100 training views under sky0, 10 test cameras rendered
again under ``test_light``: a low, warm key light from the other side; ``transforms_relight.json``).
Both methods train on the same views; both are scored on the relit test images the same way:
masked PSNR/SSIM after PhySG's per-channel median scale alignment (``physinv.relight.api``). The NeRF
cannot relight, so its render bakes in the training light; the gap is what relighting buys.
Targets (issue 9): PhySG >= 22 dB and >= 3 dB above the baseline.

    python benchmarks/relight_quality.py --minutes 40 --ngp-minutes 8 --out /tmp/relight_bench

Prints one JSON object (also written to ``<out>/relight_quality.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def score_nerf(run_dir: Path, data: Path, device) -> dict:
    """The ngp renders of the relight split's cameras, scored like ``relight eval`` (masked, aligned)."""
    from physinv.io.dataset import load_views
    from physinv.io.images import linear_to_srgb, srgb_to_linear
    from physinv.nerf.api import load_run
    from physinv.relight.api import masked_psnr, masked_ssim, median_scale

    nerf = load_run(run_dir, device)
    views = load_views(data, "relight", device=device)
    psnrs, ssims, raw = [], [], []
    for i in range(len(views)):
        with torch.no_grad():
            rgb = nerf.render_image(views.c2w[i], views.intrinsics[i], views.width, views.height)["rgb"].clamp(0, 1)
        mask = views.alpha[i] > 0.5
        target = views.images[i]
        pred_lin = srgb_to_linear(rgb)
        s = median_scale(pred_lin, srgb_to_linear(target), mask)
        aligned = linear_to_srgb(pred_lin * s).clamp(0, 1)
        psnrs.append(masked_psnr(aligned, target, mask))
        ssims.append(masked_ssim(aligned, target, mask))
        raw.append(masked_psnr(rgb, target, mask))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "psnr_unaligned": float(np.mean(raw))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("relight_bench"))
    p.add_argument("--data", type=Path, default=None, help="a data set with transforms_relight.json (default: synthesise the built-in scene)")
    p.add_argument("--minutes", type=float, default=40.0, help="PhySG fit budget")
    p.add_argument("--steps", type=int, default=1500, help="PhySG steps (its schedules scale with it)")
    p.add_argument("--ngp-minutes", type=float, default=8.0)
    p.add_argument("--views", type=int, default=100)
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from physinv.core.train import select_device
    from physinv.nerf.config import NerfConfig
    from physinv.nerf.train import train as nerf_train
    from physinv.relight.api import evaluate, load_run
    from physinv.relight.config import RelightConfig
    from physinv.relight.train import train as relight_train
    from physinv.synth.scene import synthesize_with_info

    device = select_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data or args.out / "scene"
    if not (data / "transforms_relight.json").is_file():
        synthesize_with_info(data, views=args.views, test_views=10, res=args.res, spp=64, test_light=True, seed=args.seed, progress=False)

    t0 = time.perf_counter()
    nerf_train(data, args.out / "ngp", NerfConfig(method="ngp", seed=args.seed), device=device, max_minutes=args.ngp_minutes, quiet=True)
    ngp_seconds = time.perf_counter() - t0
    baseline = score_nerf(args.out / "ngp", data, device)

    res = relight_train(data, args.out / "physg", RelightConfig(preset="small", steps=args.steps, seed=args.seed), device=device, max_minutes=args.minutes, quiet=True)
    run = load_run(args.out / "physg", device)
    relit = evaluate(run, data, "relight")
    same_light = evaluate(run, data, "test")
    result = {
        "machine": f"{torch.get_num_threads()} threads, {device}",
        "data": {"views": args.views, "res": args.res, "test_split": "relight (test cameras under test_light)"},
        "physg": {
            "steps": res.fit.step, "fit_seconds": round(res.fit.elapsed_s, 1), "stopped_by": res.fit.stopped_by,
            "relit_psnr": relit["psnr"], "relit_ssim": relit["ssim"], "relit_psnr_unaligned": relit["psnr_unaligned"],
            "relit_psnr_full_image": relit["psnr_full_image"], "albedo_psnr": relit.get("albedo_psnr"),
            "normal_error_deg": relit.get("normal_error_deg"), "light_fit_rel_l2": relit["light_fit_rel_l2"],
            "train_light_test_psnr": same_light["psnr"],
        },
        "ngp_baseline": {"train_seconds": round(ngp_seconds, 1), "relit_psnr": baseline["psnr"], "relit_ssim": baseline["ssim"], "relit_psnr_unaligned": baseline["psnr_unaligned"]},
    }
    result["gap_db"] = result["physg"]["relit_psnr"] - baseline["psnr"]
    result["targets_met"] = {"psnr>=22": result["physg"]["relit_psnr"] >= 22.0, "gap>=3dB": result["gap_db"] >= 3.0}
    (args.out / "relight_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
