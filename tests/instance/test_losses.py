"""Instance-field losses and the superpixel refinement."""

import numpy as np
import pytest
import torch

from physinv.instance.losses import depth_weighted_smoothness, instance_cross_entropy, refine_labels


def test_smoothness_is_zero_on_a_constant_map():
    logits = torch.randn(5).expand(3, 8, 8, 5).clone()
    depth = torch.rand(3, 8, 8) * 4
    assert depth_weighted_smoothness(logits, depth).item() == 0.0


def test_smoothness_is_discounted_across_depth_edges():
    logits = torch.zeros(1, 8, 8, 3)
    logits[:, :, 4:, 1] = 5.0  # a label edge between columns 3 and 4
    flat = torch.full((1, 8, 8), 2.0)
    step = flat.clone()
    step[:, :, 4:] = 4.0  # a depth edge at the same place
    step[:, :3, 1:3] = 2.5  # elsewhere some depth variation so the weights do not all vanish
    assert depth_weighted_smoothness(logits, step) < 0.2 * depth_weighted_smoothness(logits, flat)
    # the gradient only smooths the logits: none flows into the depth
    lg = logits.clone().requires_grad_()
    d = step.clone().requires_grad_()
    depth_weighted_smoothness(lg, d).backward()
    assert d.grad is None and lg.grad.abs().sum() > 0


def test_smoothness_normalisation():
    """Normalised weights: tiling the same patch twice does not change the value (no 1/R shrink)."""
    gen = torch.Generator().manual_seed(0)
    logits, depth = torch.randn(1, 6, 6, 4, generator=gen), torch.rand(1, 6, 6, generator=gen)
    one = depth_weighted_smoothness(logits, depth)
    two = depth_weighted_smoothness(logits.repeat(2, 1, 1, 1), depth.repeat(2, 1, 1))
    assert two.item() == pytest.approx(one.item(), rel=1e-6)


def test_cross_entropy_ignores_unlabelled():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [9.0, -9.0]])
    labels = torch.tensor([0, 1, -1])
    expected = torch.nn.functional.cross_entropy(logits[:2], labels[:2])
    assert instance_cross_entropy(logits, labels).item() == pytest.approx(expected.item())
    assert instance_cross_entropy(logits, torch.full((3,), -1)).item() == 0.0


def test_refinement_snaps_labels_to_image_edges():
    h = w = 32
    truth = np.zeros((h, w), np.int64)
    truth[8:24, 6:20] = 1
    image = np.full((h, w, 3), 0.9)
    image[truth == 1] = [0.8, 0.1, 0.1]
    depth = np.where(truth == 1, 2.0, 4.0)
    noisy = np.roll(truth, 2, axis=1)  # the rendered map bleeds two pixels to the right
    refined = refine_labels(noisy, image, depth)
    iou = lambda a: ((a == 1) & (truth == 1)).sum() / ((a == 1) | (truth == 1)).sum()  # noqa: E731
    assert iou(refined) > iou(noisy) and iou(refined) > 0.95
