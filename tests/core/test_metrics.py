import math

import pytest
import torch

from physinv.core import metrics


def test_psnr_matches_hand_computation():
    target = torch.zeros(4, 4, 3)
    pred = target.clone()
    pred[0, 0, 0] = 0.5  # MSE = 0.25 / 48
    expected = 10 * math.log10(1.0 / (0.25 / 48))
    assert metrics.psnr(pred, target).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_identity_and_degradation():
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(32, 32, 3, generator=gen)
    assert metrics.ssim(img, img).item() == pytest.approx(1.0, abs=1e-5)
    noisy = (img + 0.2 * torch.randn(32, 32, 3, generator=gen)).clamp(0, 1)
    assert metrics.ssim(noisy, img).item() < 0.9
    # A constant offset c only changes the luminance term: l = (2μxμy + C1) / (μx² + μy² + C1)
    flat = torch.full((32, 32, 1), 0.5)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert metrics.ssim(flat + 0.1, flat).item() == pytest.approx(expected, rel=1e-4)


def test_r2_and_relative_l2():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    pred = torch.tensor([1.0, 2.0, 3.0, 5.0])
    ss_res, ss_tot = 1.0, 5.0  # mean 2.5: 2.25+0.25+0.25+2.25
    assert metrics.r2_score(pred, target).item() == pytest.approx(1 - ss_res / ss_tot)
    assert metrics.relative_l2(pred, target).item() == pytest.approx(1 / math.sqrt(30))


def test_chamfer_known_offset():
    a = torch.tensor([[0.0, 0, 0], [1, 0, 0]])
    b = torch.tensor([[0.0, 0, 0.1], [1, 0, 0.1], [5, 0, 0]])
    out = metrics.chamfer_distance(a, b)
    assert out["accuracy"].item() == pytest.approx(0.1)
    assert out["completeness"].item() == pytest.approx((0.1 + 0.1 + 4.0) / 3)
    assert out["chamfer"].item() == pytest.approx(0.5 * (0.1 + 4.2 / 3))
    assert out["chamfer_l2"].item() == pytest.approx(0.01 + (0.01 + 0.01 + 16.0) / 3)


def test_mean_iou_hand_computed():
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    # class 0: I=1, U=2 ; class 1: I=2, U=3
    assert metrics.mean_iou(pred, target, num_classes=2).item() == pytest.approx((0.5 + 2 / 3) / 2)


def test_panoptic_quality_hand_computed():
    # two "thing" instances of class 1 in a 1x10 strip; prediction gets one right (IoU 4/5) and misses one
    target_cat = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0, 0, 0]])
    target_inst = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 0, 0, 0]])
    pred_cat = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]])
    pred_inst = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]])
    pq = metrics.panoptic_quality(pred_cat, pred_inst, target_cat, target_inst, things={1}, stuffs={0})
    # things: TP=1 (IoU 4/5), FN=1 -> PQ_1 = 0.8 / (1 + 0.5) ; stuff class 0: pred 5 px vs target 3 px, IoU 3/5 -> PQ_0 = 0.6
    expected = (0.8 / 1.5 + 0.6) / 2
    assert pq.item() == pytest.approx(expected, rel=1e-5)
