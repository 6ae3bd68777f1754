"""Demo section: a small Mitsuba ground-truth scene and its per-view maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def demo_section(report, work_dir: str | Path, device=None, seed: int = 0) -> dict:
    """Synthesize the built-in scene (64x64, 6 views, 32 spp; a few seconds) and show one view's
    RGB, albedo, normal, depth and instance maps, the environment maps and the relit view."""
    from physinv.io.dataset import load_views
    from physinv.io.hdr import read_hdr
    from physinv.io.images import composite, read_image
    from physinv.synth.scene import synthesize_with_info

    work_dir = Path(work_dir)
    prefer_cuda = device is not None and getattr(device, "type", str(device)).startswith("cuda")
    data, info = synthesize_with_info(
        work_dir / "scene", views=6, test_views=1, res=64, spp=32, lights=2, test_light=True, seed=seed, progress=False, prefer_cuda=prefer_cuda
    )
    views = load_views(data, "train", maps=("depth", "normal", "albedo", "instance"))
    i = 0
    depth = views.maps["depth"][i]
    hit = depth > 0
    section = report.section(
        "Ground truth (Mitsuba 3)",
        f"The built-in scene (plastic sphere, checkerboard diffuse cube, rough gold conductor cylinder) rendered by "
        f"Mitsuba {info['variant']} at {info['resolution'][0]}x{info['resolution'][1]}, {info['spp']} spp, "
        f"{info['views']} training views lit by {info['lights']} procedural skies, in {info['seconds']:.1f} s. "
        "Albedo, normal, depth and instance maps are one sample at each pixel centre.",
    )
    lo, hi = (float(depth[hit].min()), float(depth[hit].max())) if hit.any() else (0.0, 1.0)
    section.images(
        [
            (views.images[i], "RGB (on white)"),
            (views.maps["albedo"][i], "albedo (sRGB)"),
            ((views.maps["normal"][i] * 0.5 + 0.5) * hit[..., None], "world normal"),
            (np.where(hit.numpy(), depth.numpy(), np.nan), f"depth {lo:.2f}..{hi:.2f}"),
            (views.maps["instance"][i].float(), "instance id"),
        ],
        scale=3,
        cmap="viridis",
    )
    relit = composite(read_image(Path(data) / "test" / "l_000.png"), [1.0, 1.0, 1.0])
    test = composite(read_image(Path(data) / "test" / "r_000.png"), [1.0, 1.0, 1.0])
    section.images([(test, "test view, training light"), (relit, "test view, test light")], scale=3)
    env_items = []
    for name, path in views.envmaps.items():
        env = read_hdr(path)
        env_items.append((np.clip(env / (1.0 + env), 0.0, 1.0) ** (1 / 2.2), f"env map {name} (Reinhard)"))
    section.images(env_items, scale=2)
    coverage = float(hit.float().mean())
    return {"variant": info["variant"], "views": info["views"], "render_seconds": info["seconds"], "coverage": round(coverage, 3)}
