"""2D mask matching (Instance-NeRF §3.3.1): give the view-inconsistent ids of a 2D segmenter the
consistent ids of the 3D instances found by NeRF-RCNN.

1. :func:`project_instances`: the 3D instance masks (a label grid) seen from each training camera,
   with occlusion from the NeRF's depth: a pixel shows the instance at its ray's NeRF surface point
   ``o + depth * d``. The coarse grid may miss the surface point by a voxel, so the label is read at
   a few points along the ray around the depth and the nearest non-zero one wins.
2. :func:`match_masks`: IoU between every 2D mask and every projected instance of the same view;
   each 2D mask takes the instance with the highest IoU when that IoU > 0.05, else it is
   unlabelled (the paper's rule, ``rule="greedy"``: several masks may take the same instance).
   ``rule="hungarian"`` assigns masks and instances one-to-one per view (maximum summed IoU, as
   Panoptic Lifting's matching), with the same 0.05 floor.

Everything is plain tensors (label grid, cameras, depth maps), independent of how the NeRF is stored.
Output label maps use -1 for "unlabelled" (ignored by the loss) and 1..K for instances; pixels the
segmenter left at 0 stay unlabelled too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from physinv.core.camera import image_rays
from physinv.core.metrics import segment_overlaps
from physinv.errors import PhysinvError
from physinv.instance.grid import lookup_labels

IGNORE = -1
MIN_IOU = 0.05  # Instance-NeRF §3.3.1


def project_instances(
    labels: Tensor,
    aabb: Tensor,
    c2w: Tensor,
    intrinsics: Tensor,
    width: int,
    height: int,
    depth: Tensor,
    opacity: Tensor | None = None,
    min_opacity: float = 0.5,
    search_voxels: float = 1.5,
    samples: int = 7,
) -> Tensor:
    """Instance id (N, H, W) int64 seen at each pixel (0 = none).

    labels: (X, Y, Z) int 3D instance masks over ``aabb`` (2, 3) (see ``physinv.instance.grid``);
    c2w (N, 4, 4), intrinsics (N, 4): the cameras; depth (N, H, W): the NeRF's expected distance
    along each unit ray; opacity (N, H, W) optional: pixels below ``min_opacity`` see nothing.
    The label is read at ``samples`` points spaced over ±``search_voxels`` voxel sizes around the
    depth, visited nearest-first; the first non-zero label is taken.
    """
    voxel = float(((aabb[1] - aabb[0]) / torch.tensor(labels.shape, device=aabb.device, dtype=aabb.dtype)).max())
    offsets = torch.linspace(-search_voxels * voxel, search_voxels * voxel, samples, device=depth.device, dtype=depth.dtype)
    offsets = offsets[torch.argsort(offsets.abs(), stable=True)]  # 0, -h, +h, -2h, ... nearest first
    out = []
    for v in range(c2w.shape[0]):
        o, d = image_rays(c2w[v].to(depth.dtype), intrinsics[v].to(depth.dtype), width, height)
        t = depth[v][..., None] + offsets  # (H, W, S)
        pts = o[..., None, :] + t[..., None] * d[..., None, :]
        lab = lookup_labels(labels, aabb.to(depth.dtype), pts)  # (H, W, S)
        first = torch.argmax((lab > 0).long(), -1)  # index of the first non-zero (0 if none)
        seen = torch.gather(lab, -1, first[..., None])[..., 0]
        valid = depth[v] > 0
        if opacity is not None:
            valid &= opacity[v] >= min_opacity
        out.append(torch.where(valid, seen, torch.zeros_like(seen)))
    return torch.stack(out)


def mask_iou(masks: Tensor, projected: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For one view: 2D mask ids (M,) > 0, instance ids (K,) > 0 and their IoU matrix (M, K)."""
    ov = segment_overlaps(projected, masks)  # rows: 2D masks, columns: projected instances
    inter = ov["intersection"]
    iou = inter / (ov["pred_area"][None, :] + ov["target_area"][:, None] - inter).clamp_min(1.0)
    rows, cols = ov["target"] > 0, ov["pred"] > 0
    return ov["target"][rows], ov["pred"][cols], iou[rows][:, cols]


def match_view(masks: Tensor, projected: Tensor, rule: str = "greedy", min_iou: float = MIN_IOU) -> dict[int, int]:
    """{2D mask id: instance id} for one view; masks not in the dict are unlabelled."""
    mask_ids, inst_ids, iou = mask_iou(masks, projected)
    if iou.numel() == 0:
        return {}
    if rule == "greedy":
        best, col = iou.max(1)
        return {int(m): int(inst_ids[c]) for m, b, c in zip(mask_ids, best, col) if b > min_iou}
    if rule == "hungarian":
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(iou.cpu().numpy(), maximize=True)  # a small (M, K) matrix
        return {int(mask_ids[i]): int(inst_ids[j]) for i, j in zip(r, c) if iou[i, j] > min_iou}
    raise PhysinvError(f"--matching: expected greedy or hungarian, got {rule!r}")


def match_masks(masks: Tensor, projected: Tensor, rule: str = "greedy", min_iou: float = MIN_IOU) -> Tensor:
    """Consistent labels (N, H, W) int64 from 2D masks (N, H, W) (arbitrary ids, 0 = unlabelled)
    and projected instances (N, H, W) (:func:`project_instances`): each matched mask's pixels take
    their instance id, everything else is ``IGNORE`` (-1)."""
    out = torch.full_like(masks, IGNORE, dtype=torch.long)
    for v in range(masks.shape[0]):
        for mask_id, inst in match_view(masks[v], projected[v], rule, min_iou).items():
            out[v][masks[v] == mask_id] = inst
    return out
