"""Render a trained run at test poses or along a generated orbit: RGB, depth, opacity, and a GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from physinv.core.camera import intrinsics_from_fov, orbit_poses
from physinv.io.dataset import load_views
from physinv.io.report import to_uint8_image
from physinv.nerf.api import load_run


def orbit_cameras(aabb: torch.Tensor, n: int, elevation_deg: float, width: int, height: int, fov_deg: float = 40.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` cameras (n, 4, 4) circling the box centre at a distance that frames the box; intrinsics (4,)."""
    centre = 0.5 * (aabb[0] + aabb[1])
    radius = float(torch.linalg.norm(aabb[1] - aabb[0])) * 0.5 / np.tan(np.radians(fov_deg) / 2) * 1.05
    c2w = orbit_poses(n, radius, elevation_deg, target=centre.double().cpu()).float()
    return c2w, intrinsics_from_fov(np.radians(fov_deg), width, height).float()


def render_views(run_dir, out, data=None, split: str = "test", orbit_frames: int = 36, elevation_deg: float = 25.0, device: torch.device | str = "cpu") -> dict:
    """Write ``rgb_###.png``, ``depth_###.png`` (+ ``depth_###.npy``, distance along the ray), ``opacity_###.png``
    for each pose into ``out`` and an animated ``orbit.gif`` (or ``views.gif``) of the RGB frames. A run
    with an appearance embedding renders a data set's view under its ``light``'s code, an orbit under the mean code."""
    import imageio.v3 as iio

    run = load_run(run_dir, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data is not None:
        views = load_views(data, split, device="cpu")
        poses, intr, W, H = views.c2w, views.intrinsics, views.width, views.height
    else:
        W, H = run.width, run.height
        poses, K = orbit_cameras(run.aabb.cpu(), orbit_frames, elevation_deg, W, H)
        intr = K.expand(len(poses), 4)
    frames, far = [], float(torch.linalg.norm(run.aabb[1] - run.aabb[0])) + float(torch.linalg.norm(poses[:, :3, 3], dim=-1).max())
    lights = views.lights if data is not None and run.config.appearance_dim else []
    for i, (c2w, k) in enumerate(zip(poses, intr)):
        img = run.render_image(c2w, k, W, H, **({"light": lights[i]} if i < len(lights) else {}))  # each view's appearance code, if any
        rgb = to_uint8_image(img["rgb"].clamp(0, 1))
        iio.imwrite(out / f"rgb_{i:03d}.png", rgb)
        depth = img["depth"].cpu().numpy()
        np.save(out / f"depth_{i:03d}.npy", depth)
        iio.imwrite(out / f"depth_{i:03d}.png", to_uint8_image(np.where(depth > 0, depth, np.nan), cmap="turbo", vmin=0.0, vmax=far))
        iio.imwrite(out / f"opacity_{i:03d}.png", to_uint8_image(img["opacity"].clamp(0, 1), cmap="gray", vmin=0.0, vmax=1.0))
        frames.append(rgb)
    gif = out / ("views.gif" if data is not None else "orbit.gif")
    iio.imwrite(gif, np.stack(frames), duration=80, loop=0)
    return {"frames": len(frames), "out": str(out), "animation": str(gif)}
