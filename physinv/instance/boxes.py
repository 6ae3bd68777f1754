"""Axis-aligned 3D boxes: IoU, non-maximum suppression, the box-regression parametrisation.

Boxes are ``(..., 6)`` tensors ``(x_min, y_min, z_min, x_max, y_max, z_max)`` in the units of the
grid they live in (voxels or scene units). NeRF-RPN and NeRF-RCNN output axis-aligned boxes
(AABB, Instance-NeRF §3.2), so IoU here is the axis-aligned one: the intersection of two AABBs is an
AABB. (NeRF-RPN also has an oriented-box variant; it is not implemented.)
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_volume(boxes: Tensor) -> Tensor:
    """(..., 6) -> (...) volume; degenerate (inverted) boxes have volume 0."""
    return (boxes[..., 3:] - boxes[..., :3]).clamp_min(0).prod(-1)


def box_iou_3d(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise axis-aligned IoU of boxes a (N, 6) and b (M, 6) -> (N, M)."""
    lo = torch.maximum(a[:, None, :3], b[None, :, :3])
    hi = torch.minimum(a[:, None, 3:], b[None, :, 3:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    union = box_volume(a)[:, None] + box_volume(b)[None, :] - inter
    return inter / union.clamp_min(torch.finfo(inter.dtype).tiny)


def paired_iou_3d(a: Tensor, b: Tensor) -> Tensor:
    """IoU of corresponding boxes a (N, 6) and b (N, 6) -> (N,) (the diagonal of :func:`box_iou_3d`)."""
    inter = (torch.minimum(a[:, 3:], b[:, 3:]) - torch.maximum(a[:, :3], b[:, :3])).clamp_min(0).prod(-1)
    return inter / (box_volume(a) + box_volume(b) - inter).clamp_min(torch.finfo(inter.dtype).tiny)


def nms_3d(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: keep the best-scoring box, drop every box whose IoU with a
    kept one exceeds ``iou_threshold``, repeat. boxes (N, 6), scores (N,) -> kept indices (K,)
    int64, by decreasing score (as ``torchvision.ops.nms``, in 3D)."""
    order = torch.argsort(scores, descending=True)
    if len(order) == 0:
        return order
    iou = box_iou_3d(boxes[order], boxes[order])
    # one pass over the (sorted) boxes; the matrix is computed once (N is a few hundred at most)
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms_3d(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each label separately (boxes of different classes never suppress each other)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offset = (boxes.max() - boxes.min() + 1) * labels.to(boxes.dtype)  # move each class apart
    return nms_3d(boxes + offset[:, None], scores, iou_threshold)


def encode_boxes(boxes: Tensor, rois: Tensor) -> Tensor:
    """Regression targets of boxes (N, 6) relative to RoIs (N, 6), Instance-NeRF eq. (15) (after
    Faster R-CNN): t_xyz = (centre - centre_roi) / size_roi, t_whl = log(size / size_roi)."""
    size_r = (rois[:, 3:] - rois[:, :3]).clamp_min(1e-6)
    centre_r = 0.5 * (rois[:, 3:] + rois[:, :3])
    size = (boxes[:, 3:] - boxes[:, :3]).clamp_min(1e-6)
    centre = 0.5 * (boxes[:, 3:] + boxes[:, :3])
    return torch.cat([(centre - centre_r) / size_r, torch.log(size / size_r)], -1)


def decode_boxes(deltas: Tensor, rois: Tensor, max_log_scale: float = 4.0) -> Tensor:
    """Inverse of :func:`encode_boxes`: deltas (N, 6) applied to RoIs (N, 6) -> boxes (N, 6).
    ``max_log_scale`` clamps the size deltas so an untrained head cannot overflow ``exp``."""
    size_r = rois[:, 3:] - rois[:, :3]
    centre_r = 0.5 * (rois[:, 3:] + rois[:, :3])
    centre = centre_r + deltas[:, :3] * size_r
    size = size_r * torch.exp(deltas[:, 3:].clamp(max=max_log_scale))
    return torch.cat([centre - 0.5 * size, centre + 0.5 * size], -1)


def average_precision_3d(
    pred_boxes: list[Tensor], pred_scores: list[Tensor], gt_boxes: list[Tensor], iou_threshold: float
) -> float:
    """Class-agnostic AP of 3D boxes over a set of scenes (one tensor per scene), at one IoU
    threshold: detections sorted by score across all scenes, each matched greedily to the unmatched
    ground-truth box of highest IoU in its scene (>= threshold is a true positive), and the area
    under the precision-recall curve with precision made monotone (VOC/COCO all-points
    interpolation, as NeRF-RPN reports AP@0.25 / AP@0.5)."""
    records = []  # (score, scene, index)
    for s, scores in enumerate(pred_scores):
        records += [(float(v), s, i) for i, v in enumerate(scores.tolist())]
    records.sort(key=lambda r: -r[0])
    n_gt = sum(len(g) for g in gt_boxes)
    if n_gt == 0:
        return float("nan")
    used = [torch.zeros(len(g), dtype=torch.bool) for g in gt_boxes]
    ious = [box_iou_3d(p, g).cpu() if len(p) and len(g) else None for p, g in zip(pred_boxes, gt_boxes)]
    tp = []
    for _, s, i in records:
        hit = False
        if ious[s] is not None:
            cand = ious[s][i].clone()
            cand[used[s]] = -1.0
            j = int(cand.argmax())
            if cand[j] >= iou_threshold:
                used[s][j], hit = True, True
        tp.append(hit)
    if not tp:
        return 0.0
    tp_t = torch.tensor(tp, dtype=torch.float64)
    ctp = tp_t.cumsum(0)
    recall = ctp / n_gt
    precision = ctp / torch.arange(1, len(tp) + 1, dtype=torch.float64)
    # all-points interpolation: precision envelope, summed over recall steps
    envelope = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])
    recall_prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - recall_prev) * envelope).sum())
