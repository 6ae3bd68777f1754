"""Demo sections: a small PhySG fit on the built-in single-object scene, its decomposition and a relit view; then
a small NeRD fit under 3 lights (``nerd_section``).

Sized for 1-2 minutes on 2 CPU cores: 24 training views at 32x32 under one sky, 90 s of fitting
with the ``small`` preset (or 3000 steps on CUDA), then a test camera relit under the unseen test
light (its map fitted with SGs) beside Mitsuba's render, and the learnt SG light.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def demo_section(report, work_dir: str | Path, device: torch.device, seed: int = 0) -> dict:
    """The section; on CPU it runs on one torch thread (restored after): PhySG's many small ops gain
    little from a second thread and lose many times over when the cores are shared."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        summary = _section(report, work_dir, device, seed)
        summary["nerd"] = nerd_section(report, work_dir, device, seed)
        return summary
    finally:
        torch.set_num_threads(threads)


def _section(report, work_dir: str | Path, device: torch.device, seed: int = 0) -> dict:
    from physinv.io.dataset import load_views
    from physinv.io.images import srgb_to_linear
    from physinv.relight.api import evaluate, load_run, median_scale
    from physinv.relight.config import RelightConfig
    from physinv.relight.data import read_envmap
    from physinv.relight.train import to_display, train
    from physinv.synth.scene import synthesize
    from physinv.synth.sky import envmap_to_world
    from physinv.synth.spec import relight_scene

    work_dir = Path(work_dir)
    data = work_dir / "scene_one_object"
    if not (data / "transforms_relight.json").is_file():
        synthesize(data, spec=relight_scene(), views=24, test_views=2, res=32, spp=32, test_light=True, seed=seed, progress=False)
    run = work_dir / "run_physg"
    shutil.rmtree(run, ignore_errors=True)
    cuda = device.type == "cuda"
    cfg = RelightConfig(preset="small", steps=3000 if cuda else 400, lobes=128, seed=seed)
    result = train(data, run, cfg, device=device, max_minutes=None if cuda else 1.5, quiet=False)
    fitted = load_run(run, device)
    metrics = evaluate(fitted, data, "relight", fit_steps=300)

    sec = report.section(
        "Relighting: PhySG (SDF + SG rendering equation)",
        "A signed-distance surface (sphere-traced, IDR's implicit hit-point gradient), a diffuse albedo MLP, one "
        "monochrome GGX lobe approximated by a spherical Gaussian and a 128-SG environment light, fitted to 24 "
        "Mitsuba renders (32x32) of the built-in single-object scene (`synth scene --scene relight`) under one sky. "
        "Below: the decomposition of a test view, the same camera relit under a light never seen in training (a "
        "low warm key light from the other side; its map fitted with SGs) "
        "beside Mitsuba's render, and the learnt light.",
    )
    views = load_views(data, "relight", device=device)
    light_path = views.light_path(0)
    light, _ = fitted.light_from_map(read_envmap(light_path), views.envmap_to_world, steps=300)
    out = fitted.render_image(views.c2w[0], views.intrinsics[0], views.width, views.height, light=light)
    hit = out["hit"][..., None].float()
    target = views.images[0]
    scale = median_scale(out["rgb"], srgb_to_linear(target), (views.alpha[0] > 0.5) & out["hit"])
    relit = to_display(out["rgb"] * scale, False).clamp(0, 1) * hit + views.background * (1 - hit)
    sec.images(
        [
            (to_display(out["albedo"], False).clamp(0, 1), "albedo"),
            ((out["normal"] * 0.5 + 0.5) * hit, "normal"),
            (to_display(out["specular"] * scale, False).clamp(0, 1), "specular"),
            (relit, f"relit ({metrics['psnr_per_view'][0]:.1f} dB masked)"),
            (target, "Mitsuba, test light"),
        ],
        scale=4,
    )
    rot = torch.as_tensor(envmap_to_world(), dtype=torch.float32, device=device)
    env = fitted.model.light().to_equirect(32, to_world=rot).detach()
    sec.image((env / env.max().clamp(min=1e-6)).clamp(0, 1) ** (1 / 2.2), "learnt SG light (equirectangular, normalised)", scale=3)
    summary = {
        "relit_psnr": round(metrics["psnr"], 2),
        "relit_ssim": round(metrics["ssim"], 3),
        "albedo_psnr": round(metrics["albedo_psnr"], 2) if "albedo_psnr" in metrics else None,
        "normal_error_deg": round(metrics["normal_error_deg"], 1) if "normal_error_deg" in metrics else None,
        "steps": result.fit.step,
        "fit_seconds": round(result.fit.elapsed_s, 1),
    }
    sec.table([summary], caption="PhySG on the built-in single-object scene, relit under the unseen test light (masked, median-aligned)")
    return summary


def nerd_section(report, work_dir: str | Path, device: torch.device, seed: int = 0) -> dict:
    """NeRD on 24 views (32x32) of the built-in single-object scene under 3 skies: per-light
    reconstructions of a held-out camera, the recovered base colour / roughness / normals, and the
    camera relit under the unseen test light. About 90 s on 2 CPU cores (60 s of fitting)."""
    from physinv.io.dataset import load_views
    from physinv.io.images import linear_to_srgb, srgb_to_linear
    from physinv.relight.api import evaluate, load_run, median_scale
    from physinv.relight.config import RelightConfig
    from physinv.relight.data import read_envmap
    from physinv.relight.nerd import camera_response
    from physinv.relight.train import train
    from physinv.synth.scene import synthesize
    from physinv.synth.spec import relight_scene

    work_dir = Path(work_dir)
    data = work_dir / "scene_one_object_3_lights"
    if not (data / "transforms_relight.json").is_file():
        synthesize(data, spec=relight_scene(), views=24, test_views=3, res=32, spp=16, lights=3, test_light=True, seed=seed, progress=False)
    run = work_dir / "run_nerd"
    shutil.rmtree(run, ignore_errors=True)
    cuda = device.type == "cuda"
    # fewer samples and octaves, a higher rate: measured best of 4 variants in 60 s on this scene (benchmarks/RESULTS.md)
    cfg = RelightConfig(method="nerd", preset="small", steps=3000 if cuda else 400, coarse_samples=24, fine_samples=24, pos_freqs=4, lr=2e-3, seed=seed)
    result = train(data, run, cfg, device=device, max_minutes=None if cuda else 1.0, quiet=False)
    fitted = load_run(run, device)
    test = evaluate(fitted, data, "test", fit_steps=200)
    relit_metrics = evaluate(fitted, data, "relight", fit_steps=200)

    sec = report.section(
        "Relighting: NeRD (density + BRDF auto-encoder + one SG light per photo)",
        "NeRD's two networks: a sampling network (density and an illumination-conditioned colour, 24 stratified samples "
        "here) and a decomposition network (density, normals as -grad sigma, a BRDF auto-encoder with a 2-D latent decoding "
        "base colour / metallic / roughness; 24 importance samples), shaded per ray under 24-SG illuminations, one per "
        "training light (frames naming the same sky share it). Fitted on 24 Mitsuba renders (32x32) of the built-in "
        "single-object scene under 3 skies. Below: "
        "held-out cameras under their own training light (learnt illumination), the decomposition, and a camera relit under "
        "a light never seen in training (its map fitted with 24 SGs) beside Mitsuba's render.",
    )
    views = load_views(data, "test", device=device)
    rows = []
    for i in range(len(views)):
        out = fitted.render_image(views.c2w[i], views.intrinsics[i], views.width, views.height, light=fitted.learnt_light(views.lights[i]))
        op = out["opacity"][..., None]
        shown = camera_response(out["rgb"], 1.0, fitted.linear) * op + views.background * (1 - op)
        rows += [(shown.clamp(0, 1), f"NeRD, {views.lights[i]}"), (views.images[i], f"Mitsuba, {views.lights[i]}")]
    sec.images(rows, scale=4)
    out = fitted.render_image(views.c2w[0], views.intrinsics[0], views.width, views.height, light=fitted.learnt_light(views.lights[0]))
    hit = out["opacity"][..., None]
    sec.images(
        [
            (linear_to_srgb(out["base_colour"]).clamp(0, 1) * hit + (1 - hit), "base colour"),
            (out["roughness"].expand(-1, -1, 3) * hit + (1 - hit), "roughness"),
            (out["metallic"].expand(-1, -1, 3) * hit + (1 - hit), "metallic"),
            ((out["normal"] * 0.5 + 0.5) * hit + (1 - hit), "normal (-grad sigma)"),
        ],
        scale=4,
    )
    relight = load_views(data, "relight", device=device)
    light, _ = fitted.light_from_map(read_envmap(relight.light_path(0)), relight.envmap_to_world, steps=200)
    out = fitted.render_image(relight.c2w[0], relight.intrinsics[0], relight.width, relight.height, light=light)
    hit = out["hit"][..., None].float()
    scale = median_scale(out["rgb"], srgb_to_linear(relight.images[0]), (relight.alpha[0] > 0.5) & out["hit"])
    relit = linear_to_srgb(out["rgb"] * scale).clamp(0, 1) * hit + relight.background * (1 - hit)
    sec.images([(relit, f"relit, unseen light ({relit_metrics['psnr_per_view'][0]:.1f} dB masked)"), (relight.images[0], "Mitsuba, unseen light")], scale=4)
    summary = {
        "test_psnr_render": round(test["psnr_render"], 2),
        "relit_psnr": round(relit_metrics["psnr"], 2),
        "no_relight_psnr": round(relit_metrics["psnr_no_relight"], 2),
        "normal_error_deg": round(relit_metrics["normal_error_deg"], 1) if "normal_error_deg" in relit_metrics else None,
        "steps": result.fit.step,
        "fit_seconds": round(result.fit.elapsed_s, 1),
    }
    sec.table([summary], caption="NeRD on the built-in single-object scene under 3 skies: held-out views under the training lights (every pixel, unaligned), and relit under the unseen light vs the same views under the best training light (masked, median-aligned)")
    return summary
