"""NeRF-RCNN on a trained NeRF: sample its radiance and density on a grid, detect, 3D masks.

As NeRF-RPN (and Instance-NeRF §3.2), the grid covers the scene box uniformly; the density becomes
alpha = 1 - exp(-sigma * voxel size) so the input does not depend on the grid's resolution, and
the radiance is the mean over a few viewing directions (the six axis directions here), since the
detector should not depend on a view.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from physinv.instance.grid import grid_shape, voxel_centres, voxel_to_world
from physinv.instance.rcnn import NerfRcnn, paste_masks

DensityFn = Callable[[Tensor], Tensor]  # (N, 3) -> (N,) 1/scene unit
RadianceFn = Callable[[Tensor, Tensor], Tensor]  # (N, 3), (N, 3) -> (N, 3)


def detector_grid_shape(aabb: Tensor, longest: int) -> tuple[int, int, int]:
    """Grid shape with ``longest`` voxels along the longest side, every side a multiple of 8 (the
    detector's stride)."""
    return tuple(max(8, 8 * round(n / 8)) for n in grid_shape(aabb, longest))  # type: ignore[return-value]


@torch.no_grad()
def sample_grid(density_fn: DensityFn, radiance_fn: RadianceFn, aabb: Tensor, shape: tuple[int, int, int], chunk: int = 65536) -> Tensor:
    """(4, X, Y, Z) float32 grid: mean radiance over the six axis directions, and alpha."""
    pts = voxel_centres(aabb.float(), shape).reshape(-1, 3)
    voxel = float(((aabb[1] - aabb[0]) / torch.tensor(shape, device=aabb.device, dtype=aabb.dtype)).mean())
    dirs = torch.cat([torch.eye(3, device=aabb.device), -torch.eye(3, device=aabb.device)])
    sigma = torch.cat([density_fn(p) for p in pts.split(chunk)])
    rgb = torch.zeros_like(pts)
    for d in dirs:
        rgb += torch.cat([radiance_fn(p, d.expand_as(p)) for p in pts.split(chunk)])
    rgb /= len(dirs)
    alpha = 1.0 - torch.exp(-sigma.clamp_min(0) * voxel)
    return torch.cat([rgb.clamp(0, 1).T, alpha[None]], 0).reshape(4, *shape).float()


@torch.no_grad()
def detect_instances(model: NerfRcnn, grid: Tensor, aabb: Tensor, score_threshold: float | None = None) -> dict[str, Tensor]:
    """Run the detector on a grid over ``aabb``: ``labels`` (X, Y, Z) int64 3D instance masks
    (k = detection k-1), ``boxes`` (D, 6) in world units, ``scores`` (D,), ``classes`` (D,).
    score_threshold: None = the detector's own (the paper's 0.5)."""
    det = model.detect(grid, score_threshold)
    shape = tuple(grid.shape[1:])
    labels = paste_masks(det, shape)
    corners = det["boxes"].reshape(-1, 2, 3)
    boxes_world = voxel_to_world(corners, aabb.to(corners.dtype), shape).reshape(-1, 6)
    return {"labels": labels, "boxes": boxes_world, "scores": det["scores"], "classes": det["classes"]}
