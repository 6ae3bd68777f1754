"""Evaluation metrics. torchmetrics where it fits; Chamfer distance by hand (chunked ``cdist``).

Images are channel-last in [0, 1]: (H, W, C) or (N, H, W, C). Every function returns a 0-d tensor
on the inputs' device (or a dict of them).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.regression import r2_score as _tm_r2
from torchmetrics.functional.classification import multiclass_jaccard_index
from torchmetrics.functional.detection import panoptic_quality as _tm_pq


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB over all elements: 10 log10(range² / MSE)."""
    return peak_signal_noise_ratio(pred, target, data_range=data_range)


def _to_nchw(image: torch.Tensor) -> torch.Tensor:
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim == 3:
        image = image[None]
    return image.permute(0, 3, 1, 2)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Gaussian window 11, σ = 1.5), averaged over images and channels.

    pred, target: (H, W), (H, W, C) or (N, H, W, C).
    """
    if pred.shape != target.shape:
        raise ValueError(f"ssim: shapes differ {tuple(pred.shape)} vs {tuple(target.shape)}")
    return structural_similarity_index_measure(_to_nchw(pred.float()), _to_nchw(target.float()), data_range=data_range)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination 1 - SS_res / SS_tot over all elements (flattened)."""
    return _tm_r2(pred.reshape(-1), target.reshape(-1))


def relative_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖pred − target‖₂ / ‖target‖₂ over all elements."""
    return torch.linalg.vector_norm(pred - target) / torch.linalg.vector_norm(target).clamp_min(1e-12)


def _nearest_distances(src: torch.Tensor, dst: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """For each point of src (N, 3): Euclidean distance to its nearest point of dst (M, 3)."""
    return torch.cat([torch.cdist(part, dst).min(dim=1).values for part in src.split(chunk)])


def chamfer_distance(points_pred: torch.Tensor, points_gt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Chamfer distance between point sets (N, 3) and (M, 3), in scene units.

    accuracy: mean distance pred → gt; completeness: mean distance gt → pred;
    chamfer: their mean (the DTU "overall" L1 convention);
    chamfer_l2: mean squared distances summed both ways (PyTorch3D's convention).
    """
    d_pred = _nearest_distances(points_pred, points_gt)
    d_gt = _nearest_distances(points_gt, points_pred)
    acc, comp = d_pred.mean(), d_gt.mean()
    return {
        "chamfer": 0.5 * (acc + comp),
        "accuracy": acc,
        "completeness": comp,
        "chamfer_l2": d_pred.square().mean() + d_gt.square().mean(),
    }


def mean_iou(pred_labels: torch.Tensor, target_labels: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """Mean intersection-over-union over classes present in pred or target (integer label maps)."""
    return multiclass_jaccard_index(
        pred_labels.reshape(-1), target_labels.reshape(-1), num_classes=num_classes, average="macro", ignore_index=ignore_index
    )


def panoptic_quality(
    pred_category: torch.Tensor,
    pred_instance: torch.Tensor,
    target_category: torch.Tensor,
    target_instance: torch.Tensor,
    things: set[int],
    stuffs: set[int],
) -> torch.Tensor:
    """Panoptic quality PQ = SQ · RQ (Kirillov et al.) over label maps of shape (H, W) or (N, H, W).

    Segments match when IoU > 0.5; ``stuffs`` classes ignore instance ids.
    """

    def pack(cat: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
        packed = torch.stack([cat.long(), inst.long()], dim=-1)
        return packed[None] if packed.ndim == 3 else packed

    return _tm_pq(pack(pred_category, pred_instance), pack(target_category, target_instance), things=set(things), stuffs=set(stuffs))
