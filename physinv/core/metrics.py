"""Evaluation metrics. torchmetrics where it fits; Chamfer distance by hand (chunked ``cdist``).

Images are channel-last in [0, 1]: (H, W, C) or (N, H, W, C). Every function returns a 0-d tensor
on the inputs' device (or a dict of them).
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.regression import r2_score as _tm_r2
from torchmetrics.functional.classification import multiclass_jaccard_index
from torchmetrics.functional.detection import panoptic_quality as _tm_pq


def mse_to_psnr(mse: float | torch.Tensor) -> float | torch.Tensor:
    """PSNR (dB) of values in [0, 1] from their mean squared error (a tensor stays a tensor on its
    device, so a training step can log it without waiting for the host)."""
    if isinstance(mse, torch.Tensor):
        return -10.0 * torch.log10(mse.clamp(min=1e-12))
    return -10.0 * math.log10(max(float(mse), 1e-12))


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


# ----------------------------------------------------------------------------------------------
# instance segmentation: segments are (category, id) pairs with id > 0 (id 0 = background /
# unlabelled, never a segment). Ids are arbitrary integers; only their equality matters.


def segment_overlaps(pred_ids: torch.Tensor, target_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pixel counts of every (target segment, predicted segment) pair, by one ``bincount``.

    pred_ids, target_ids: integer label maps of the same shape (any shape; flattened).
    Returns ``pred`` (P,) and ``target`` (T,) the sorted distinct ids (0 included when present),
    ``intersection`` (T, P), ``pred_area`` (P,), ``target_area`` (T,) as float64 pixel counts.
    """
    if pred_ids.shape != target_ids.shape:
        raise ValueError(f"segment_overlaps: shapes differ {tuple(pred_ids.shape)} vs {tuple(target_ids.shape)}")
    p_vals, p_idx = torch.unique(pred_ids.reshape(-1), return_inverse=True)
    t_vals, t_idx = torch.unique(target_ids.reshape(-1), return_inverse=True)
    n_p, n_t = len(p_vals), len(t_vals)
    inter = torch.bincount(t_idx * n_p + p_idx, minlength=n_t * n_p).reshape(n_t, n_p).double()
    return {"pred": p_vals, "target": t_vals, "intersection": inter, "pred_area": inter.sum(0), "target_area": inter.sum(1)}


def instance_pq(
    pred_ids: torch.Tensor,
    target_ids: torch.Tensor,
    pred_category: torch.Tensor | None = None,
    target_category: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Panoptic quality over "thing" segments only (background filtered out, as Instance-NeRF §4.2).

    pred_ids, target_ids: integer label maps (any equal shape, e.g. (H, W)); 0 = background.
    pred_category, target_category: optional per-pixel class maps (same shape); None = one class
    ("thing"), i.e. class-agnostic PQ. A predicted and a target segment match when they have the
    same class and IoU > 0.5 (Kirillov et al.: such a match is unique). Per class
    PQ_c = Σ_TP IoU / (TP + FP/2 + FN/2); ``pq`` is the mean over classes that occur in the
    prediction or the target; ``sq`` and ``rq`` likewise. No segment at all -> NaN.
    Returns 0-d float64 tensors ``pq``, ``sq``, ``rq`` on the inputs' device.
    """
    # keys that are equal across pred and target when (category, id) are: use a shared offset
    scale = torch.maximum(pred_ids.max(), target_ids.max()).clamp_min(0).long() + 1
    pred_cat = torch.zeros_like(pred_ids) if pred_category is None else pred_category.long()
    target_cat = torch.zeros_like(target_ids) if target_category is None else target_category.long()
    pk = torch.where(pred_ids > 0, (pred_cat + 1) * scale + pred_ids.long(), torch.zeros_like(pred_ids.long()))
    tk = torch.where(target_ids > 0, (target_cat + 1) * scale + target_ids.long(), torch.zeros_like(target_ids.long()))
    ov = segment_overlaps(pk, tk)
    inter, p_area, t_area = ov["intersection"], ov["pred_area"], ov["target_area"]
    iou = inter / (p_area[None, :] + t_area[:, None] - inter).clamp_min(1.0)
    p_class, t_class = ov["pred"] // scale, ov["target"] // scale  # category + 1; 0 = background
    same = t_class[:, None] == p_class[None, :]
    match = (iou > 0.5) & same & (t_class[:, None] > 0) & (p_class[None, :] > 0)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=pred_ids.device)
    classes = torch.unique(torch.cat([p_class[p_class > 0], t_class[t_class > 0]]))
    if len(classes) == 0:
        return {"pq": nan, "sq": nan, "rq": nan}
    pqs, sqs, rqs = [], [], []
    for c in classes:
        m = match & (t_class[:, None] == c)
        tp = m.sum().double()
        fn = (t_class == c).sum() - tp
        fp = (p_class == c).sum() - tp
        iou_sum = (iou * m).sum()
        denom = tp + 0.5 * fp + 0.5 * fn
        pqs.append(iou_sum / denom)
        sqs.append(iou_sum / tp if tp > 0 else iou_sum * 0.0)
        rqs.append(tp / denom)
    return {"pq": torch.stack(pqs).mean(), "sq": torch.stack(sqs).mean(), "rq": torch.stack(rqs).mean()}


def pq_per_view(
    pred_ids: torch.Tensor,
    target_ids: torch.Tensor,
    pred_category: torch.Tensor | None = None,
    target_category: torch.Tensor | None = None,
) -> torch.Tensor:
    """Conventional PQ: :func:`instance_pq` on each view (N, H, W) separately, averaged over the views
    that have any segment. Ids need not agree across views (Instance-NeRF §4.2)."""
    vals = []
    for i in range(pred_ids.shape[0]):
        pc = None if pred_category is None else pred_category[i]
        tc = None if target_category is None else target_category[i]
        vals.append(instance_pq(pred_ids[i], target_ids[i], pc, tc)["pq"])
    return torch.stack(vals).nanmean()


def pq_scene(
    pred_ids: torch.Tensor,
    target_ids: torch.Tensor,
    pred_category: torch.Tensor | None = None,
    target_category: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scene-level PQ (Panoptic Lifting's PQ^scene): each id is ONE segment across all views
    (N, H, W), so an object that carries different ids in different views is penalised.
    Computed as :func:`instance_pq` on the views stacked into one image."""
    flat = lambda t: None if t is None else t.reshape(-1)  # noqa: E731
    return instance_pq(flat(pred_ids), flat(target_ids), flat(pred_category), flat(target_category))["pq"]


def hungarian_match(pred_ids: torch.Tensor, target_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """One-to-one matching of predicted to target segments (ids > 0) maximising the summed IoU
    (``scipy.optimize.linear_sum_assignment``). Returns ``target`` (T,) ids, ``pred`` (T,) the
    matched predicted id (0 = none) and ``iou`` (T,) float64, on the inputs' device."""
    from scipy.optimize import linear_sum_assignment

    ov = segment_overlaps(pred_ids, target_ids)
    inter = ov["intersection"]
    iou = inter / (ov["pred_area"][None, :] + ov["target_area"][:, None] - inter).clamp_min(1.0)
    t_keep, p_keep = ov["target"] > 0, ov["pred"] > 0
    iou = iou[t_keep][:, p_keep]
    targets, preds = ov["target"][t_keep], ov["pred"][p_keep]
    matched = torch.zeros_like(targets)
    best = torch.zeros(len(targets), dtype=torch.float64, device=pred_ids.device)
    if iou.numel():
        rows, cols = linear_sum_assignment(iou.cpu().numpy(), maximize=True)  # a small (T, P) matrix
        rows, cols = torch.as_tensor(rows, device=iou.device), torch.as_tensor(cols, device=iou.device)
        matched[rows] = preds[cols]
        best[rows] = iou[rows, cols]
    return {"target": targets, "pred": matched, "iou": best}


def matched_miou(pred_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the target instances (ids > 0) after Hungarian matching of predicted ids to
    target ids (:func:`hungarian_match`); an unmatched target instance counts IoU 0. Any equal
    shapes: pass one view (H, W) for a per-view score or stacked views (N, H, W) for ids that must
    agree across views. NaN when the target has no instance."""
    m = hungarian_match(pred_ids, target_ids)
    return m["iou"].mean() if len(m["iou"]) else torch.tensor(float("nan"), dtype=torch.float64, device=pred_ids.device)


def instance_scores(pred_ids: torch.Tensor, target_ids: torch.Tensor) -> dict[str, float]:
    """The instance scores of a set of views (N, H, W) as floats: ``pq`` (per view, averaged),
    ``pq_scene``, ``miou`` (Hungarian-matched per view, averaged) and ``miou_scene`` (matched over
    all views at once, so ids must agree across views)."""
    per_view = torch.stack([matched_miou(pred_ids[i], target_ids[i]) for i in range(pred_ids.shape[0])]).nanmean()
    return {
        "pq": float(pq_per_view(pred_ids, target_ids)),
        "pq_scene": float(pq_scene(pred_ids, target_ids)),
        "miou": float(per_view),
        "miou_scene": float(matched_miou(pred_ids, target_ids)),
    }
