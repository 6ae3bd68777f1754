"""Regular voxel grids over a scene box: the one convention shared by NeRF-RCNN and mask matching.

A grid of shape (X, Y, Z) over ``aabb`` (2, 3) = [lo, hi] has voxel (i, j, k) centred at
``lo + (i + 0.5, j + 0.5, k + 0.5) * (hi - lo) / (X, Y, Z)``; tensors are indexed ``[i, j, k]``
(x first). Boxes in voxel units span [0, X] x [0, Y] x [0, Z] (a voxel's box is [i, i+1]).
"""

from __future__ import annotations

import torch
from torch import Tensor


def grid_shape(aabb: Tensor, longest: int) -> tuple[int, int, int]:
    """(X, Y, Z) with ``longest`` voxels along the box's longest side and cubic voxels (>= 1 each)."""
    extent = (aabb[1] - aabb[0]).double()
    voxel = float(extent.max()) / longest
    return tuple(max(1, round(float(e) / voxel)) for e in extent)  # type: ignore[return-value]


def voxel_centres(aabb: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """(X, Y, Z, 3) world positions of the voxel centres."""
    axes = [aabb[0, d] + (torch.arange(n, device=aabb.device, dtype=aabb.dtype) + 0.5) * (aabb[1, d] - aabb[0, d]) / n for d, n in enumerate(shape)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


def world_to_voxel(points: Tensor, aabb: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """World points (..., 3) -> continuous voxel coordinates (..., 3) (voxel i spans [i, i+1))."""
    size = torch.tensor(shape, dtype=points.dtype, device=points.device)
    return (points - aabb[0].to(points.dtype)) / (aabb[1] - aabb[0]).to(points.dtype) * size


def voxel_to_world(coords: Tensor, aabb: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Inverse of :func:`world_to_voxel` (also for boxes' corners)."""
    size = torch.tensor(shape, dtype=coords.dtype, device=coords.device)
    return aabb[0].to(coords.dtype) + coords / size * (aabb[1] - aabb[0]).to(coords.dtype)


def lookup_labels(labels: Tensor, aabb: Tensor, points: Tensor) -> Tensor:
    """Label (...,) int64 of the voxel holding each world point (..., 3); 0 outside the grid."""
    shape = tuple(labels.shape)
    idx = torch.floor(world_to_voxel(points, aabb, shape)).long()
    size = torch.tensor(shape, device=points.device)
    inside = ((idx >= 0) & (idx < size)).all(-1)
    idx = torch.minimum(idx.clamp_min(0), size - 1)
    return torch.where(inside, labels[idx[..., 0], idx[..., 1], idx[..., 2]].long(), torch.zeros_like(inside, dtype=torch.long))
