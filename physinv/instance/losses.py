"""Instance-field losses (Instance-NeRF §3.1.3) and the image-space refinement (§3.3.2).

- :func:`instance_cross_entropy`: eq. (8), multi-class cross-entropy of the softmax of the
  composited logits (eq. 5) against the matched labels; unlabelled pixels (-1) do not take part.
- :func:`depth_weighted_smoothness`: eqs. (9)-(11) (after RegNeRF), on patches of rays: squared
  differences of the composited logits of horizontally and vertically neighbouring pixels,
  weighted by exp(-ΔD²) of the NeRF's depth and normalised over the batch.
- :func:`refine_labels`: the paper refines each rendered instance mask with CascadePSP, whose
  weights cannot be downloaded here. Instead: SLIC superpixels of the image and the NeRF's depth
  (scikit-image), and each superpixel takes the majority label of the rendered map inside it, so
  label boundaries snap to colour and depth edges.

Deviation (tested in test_smoothness_normalisation): the printed eq. (9) divides by R·L *and*
normalises the weights w, h over the batch, so the term would shrink as 1/R with the batch size;
here the normalised weights already average over the batch and only 1/L remains.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -1


def instance_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over labelled rays: logits (R, L) composited, labels (R,) in 0..L-1 or -1."""
    keep = labels >= 0
    if not keep.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep])


def depth_weighted_smoothness(logits: Tensor, depth: Tensor) -> Tensor:
    """Eqs. (9)-(11) on patches: logits (P, h, w, L) composited per pixel, depth (P, h, w) NeRF depth.

    Σ_pairs w · Σ_l (ΔÎ_l)² / L over horizontal pairs (weights w) plus vertical pairs (weights h),
    with w ∝ exp(-(ΔD)²) normalised to sum 1 over the batch (and likewise h). The depth only
    weights the term (no gradient flows to it). Zero for a constant map.
    """
    n_labels = logits.shape[-1]
    depth = depth.detach()
    dx = (logits[:, :, 1:] - logits[:, :, :-1]).square().sum(-1)
    dy = (logits[:, 1:] - logits[:, :-1]).square().sum(-1)
    wx = torch.exp(-(depth[:, :, 1:] - depth[:, :, :-1]).square())
    wy = torch.exp(-(depth[:, 1:] - depth[:, :-1]).square())
    wx, wy = wx / wx.sum().clamp_min(1e-12), wy / wy.sum().clamp_min(1e-12)
    return ((dx * wx).sum() + (dy * wy).sum()) / n_labels


def refine_labels(labels: np.ndarray, image: np.ndarray, depth: np.ndarray, n_segments: int | None = None, compactness: float = 0.1, seed: int = 0) -> np.ndarray:
    """Snap a rendered label map (H, W) int to image and depth edges: SLIC superpixels on
    (RGB in [0, 1], depth scaled to [0, 1]) and a majority vote of ``labels`` in each superpixel.
    n_segments: about one superpixel per 20 pixels by default; compactness: SLIC's colour/space
    trade-off for features in [0, 1] (its default 10 suits Lab colours in [0, 100]; 0.1 here)."""
    from skimage.segmentation import slic

    h, w = labels.shape
    d = depth.astype(np.float64)
    span = float(d.max() - d.min())
    d = (d - d.min()) / span if span > 0 else np.zeros_like(d)
    features = np.concatenate([image.astype(np.float64), d[..., None]], -1)
    segments = slic(features, n_segments=n_segments or max(16, h * w // 20), compactness=compactness, channel_axis=-1,
                    start_label=0, convert2lab=False, enforce_connectivity=True)
    lab = labels.astype(np.int64)
    offset = lab.min()
    shifted = lab - offset
    n_lab = int(shifted.max()) + 1
    votes = np.zeros((segments.max() + 1, n_lab), np.int64)
    np.add.at(votes, (segments.ravel(), shifted.ravel()), 1)
    return (votes.argmax(1) + offset)[segments]
