"""Demo section: a small ``ngp`` run on the built-in Mitsuba scene, with test renders and the PSNR curve.

Sized for about 2-3 minutes on 2 CPU cores: 48 training / 4 test views at 64x64, two minutes of
training (or 3000 steps on CUDA), then every test view rendered next to the ground truth.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from physinv.core.train import LOG_NAME, JsonlLog
from physinv.nerf.api import evaluate, load_run
from physinv.nerf.config import NerfConfig
from physinv.nerf.train import eval_curve, train


def demo_section(report, work_dir: str | Path, device: torch.device, seed: int = 0) -> dict:
    from physinv.io.dataset import load_views
    from physinv.synth.scene import synthesize

    work_dir = Path(work_dir)
    data = work_dir / "scene"
    if not (data / "transforms_test.json").is_file():
        synthesize(data, views=48, test_views=4, res=64, spp=32, seed=seed, progress=False)
    run = work_dir / "run_ngp"
    shutil.rmtree(run, ignore_errors=True)  # a fresh run each time (the data are kept): the figures are a 2-minute run's
    cuda = device.type == "cuda"
    cfg = NerfConfig(method="ngp", seed=seed, steps=3000 if cuda else 100_000, eval_every=100 if not cuda else 250, checkpoint_every=500)
    result = train(data, run, cfg, device=device, max_minutes=None if cuda else 2.0)
    trained = load_run(run, device)
    metrics = evaluate(trained, data, "test")

    sec = report.section(
        "NeRF: hash-grid radiance field (ngp)",
        "A radiance field trained on 48 Mitsuba renders (64x64) of the built-in scene: multi-resolution hash "
        "grid (16 levels x 2 features, T = 2^19), spherical-harmonics view directions, small MLPs, an occupancy "
        "grid that skips empty space and packed samples with early ray termination — pure PyTorch. "
        "Below: held-out test views (ground truth, render, expected depth along the ray, opacity).",
    )
    log = JsonlLog(run / LOG_NAME).read()
    curve = eval_curve(log)
    sec.plot([t for t, _, _ in curve], {"held-out PSNR": [p for _, p, _ in curve]}, xlabel="training time (s)", ylabel="PSNR (dB)", caption="PSNR on 4096 held-out test rays during training")
    views = load_views(data, "test", device=device)
    for i in range(views.images.shape[0]):
        out = trained.render_image(views.c2w[i], views.intrinsics[i], views.width, views.height)
        sec.images(
            [
                (views.images[i], f"ground truth {i}"),
                (out["rgb"].clamp(0, 1), f"render ({metrics['psnr_per_view'][i]:.2f} dB)"),
                (out["depth"], "depth"),
                (out["opacity"], "opacity"),
            ],
            scale=3,
        )
    samples = [x["samples_per_ray"] for x in log if "samples_per_ray" in x]
    summary = {
        "test_psnr": round(metrics["psnr"], 3),
        "test_ssim": round(metrics["ssim"], 4),
        "steps": result.fit.step,
        "train_seconds": round(result.fit.elapsed_s, 1),
        "samples_per_ray": round(samples[-1], 2) if samples else None,
    }
    sec.table([summary], caption="ngp on the built-in scene (test split)")
    return summary
