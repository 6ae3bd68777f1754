"""Relighting data: views with masks, the unit-sphere normalisation of the cameras, environment maps.

The object must lie inside the unit sphere of the normalised frame (PhySG traces inside it). The
normalisation is x_n = (x - centre) / scale, a translation and a uniform scale (no rotation, so
directions, normals and environment maps are unchanged):

* from the data's ``aabb``: centre = the box centre, scale = its half-diagonal;
* else from the cameras and masks: centre = the least-squares point nearest to every optical axis
  (the cameras' common look-at point), scale = 1.1 x the largest radius seen in any mask
  (distance to the centre x tan of the mask's widest angle from the axis through it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from physinv.config import config_to_dict
from physinv.core.camera import image_rays, look_at_point
from physinv.errors import input_error
from physinv.io.dataset import ViewSet, load_views
from physinv.io.hdr import read_hdr
from physinv.io.transforms import read_transforms, split_path


@dataclass
class RelightViews:
    """views: the split with c2w in the normalised frame; masks (N, H, W) float 1 = object;
    linear: the images are linear HDR (.exr/.hdr) rather than sRGB-encoded 8-bit."""

    views: ViewSet
    masks: Tensor
    linear: bool
    centre: Tensor
    scale: float

    def run_config(self, config, data_dir: str | Path) -> dict:
        """What every relighting run saves beside its weights: the method's configuration, the camera
        normalisation, the images' encoding, the background and the data folder."""
        return {
            "relight": config_to_dict(config),
            "centre": self.centre.tolist(),
            "scale": self.scale,
            "linear": self.linear,
            "background": self.views.background.tolist(),
            "data": str(Path(data_dir).resolve()),
        }


def _masks(data_dir: Path, split: str, views: ViewSet, device) -> Tensor:
    if all("mask_path" in e for e in views.frames_extras):
        m = load_views(data_dir, split, device=device, maps=("mask",)).maps["mask"]
        return (m > 0.5).float()
    if views.alpha is not None:
        return (views.alpha > 0.5).float()
    raise input_error(views.source, "frames", "no masks: the images have no alpha channel and the frames no mask_path (PhySG needs object masks)")


def normalisation(views: ViewSet, masks: Tensor) -> tuple[Tensor, float]:
    """(centre (3,), scale) taking the object into the unit sphere (module docstring)."""
    if views.aabb is not None:
        aabb = views.aabb.double().cpu()
        return (0.5 * (aabb[0] + aabb[1])).float(), float(0.5 * (aabb[1] - aabb[0]).norm())
    centre = look_at_point(views.c2w.double().cpu())
    radius = 0.0
    for i in range(len(views)):
        o, d = image_rays(views.c2w[i].double().cpu(), views.intrinsics[i].double().cpu(), views.width, views.height)
        sel = masks[i].cpu() > 0.5
        if not sel.any():
            continue
        to_centre = centre - o[0, 0]
        dist = float(to_centre.norm())
        cos = (d[sel] @ (to_centre / dist)).clamp(-1, 1)
        radius = max(radius, dist * float(torch.tan(torch.arccos(cos.min()))))
    if radius <= 0:
        raise input_error(views.source, "frames", "the masks are empty: cannot place the object in the unit sphere")
    return centre.float(), 1.1 * radius


def is_linear(data_dir: str | Path, split: str) -> bool:
    """True when the split's images are HDR (.exr/.hdr: compared linearly), False for 8-bit sRGB."""
    frames = read_transforms(split_path(data_dir, split)).frames
    return frames[0].image_path.suffix.lower() in (".exr", ".hdr")


def load_relight_views(data_dir: str | Path, split: str, device, centre: Tensor | None = None, scale: float | None = None) -> RelightViews:
    """Load a split with masks, and normalise its cameras (with the given centre/scale, else its own)."""
    data_dir = Path(data_dir)
    views = load_views(data_dir, split, device=device)
    masks = _masks(data_dir, split, views, device)
    if centre is None or scale is None:
        centre, scale = normalisation(views, masks)
    c2w = views.c2w.clone()
    c2w[:, :3, 3] = (c2w[:, :3, 3] - centre.to(c2w)) / scale
    views.c2w = c2w
    return RelightViews(views, masks, is_linear(data_dir, split), centre.float(), float(scale))


def read_envmap(path: str | Path, field: str | None = None) -> np.ndarray:
    """An equirectangular HDR environment map (H, 2H, 3) float32; not HDR, not 2:1 or non-finite -> one-line error."""
    path = Path(path)
    if path.suffix.lower() not in (".exr", ".hdr"):
        raise input_error(path, field, "not an HDR environment map (expected .exr or .hdr; 8-bit images clip the light)")
    image = read_hdr(path)
    h, w = image.shape[:2]
    if w != 2 * h:
        raise input_error(path, field, f"an equirectangular map must be twice as wide as high, got {w}x{h}")
    if not np.all(np.isfinite(image)) or image.min() < 0:
        raise input_error(path, field, "the map has negative, NaN or infinite values")
    return image
