"""3D boxes: IoU and NMS against brute force; the regression parametrisation round-trips; AP by hand."""

import itertools

import pytest
import torch

from physinv.instance.boxes import average_precision_3d, batched_nms_3d, box_iou_3d, decode_boxes, encode_boxes, nms_3d


def _random_boxes(gen, n, grid=8):
    lo = torch.randint(0, grid - 1, (n, 3), generator=gen)
    size = torch.randint(1, 4, (n, 3), generator=gen)
    return torch.cat([lo, (lo + size).clamp(max=grid)], -1).double()


def _voxel_iou(a, b, grid=8):
    """Brute force: count the unit voxels of an integer grid inside both boxes."""
    def occ(box):
        x = torch.zeros(grid, grid, grid, dtype=torch.bool)
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
        x[x0:x1, y0:y1, z0:z1] = True
        return x
    oa, ob = occ(a), occ(b)
    return (oa & ob).sum().item() / max((oa | ob).sum().item(), 1)


def test_iou_against_voxel_counting():
    gen = torch.Generator().manual_seed(0)
    a, b = _random_boxes(gen, 12), _random_boxes(gen, 9)
    iou = box_iou_3d(a, b)
    expected = torch.tensor([[_voxel_iou(x, y) for y in b] for x in a], dtype=torch.float64)
    assert torch.allclose(iou, expected)
    assert torch.allclose(torch.diagonal(box_iou_3d(a, a)), torch.ones(12, dtype=torch.float64))


def _brute_nms(boxes, scores, thr):
    """Definition: a box is kept iff no higher-scoring KEPT box overlaps it by more than thr."""
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))
    kept = []
    for i in order:
        if all(_voxel_iou(boxes[i], boxes[k]) <= thr for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed, thr", list(itertools.product(range(4), (0.15, 0.3, 0.5))))
def test_nms_against_brute_force(seed, thr):
    gen = torch.Generator().manual_seed(seed)
    boxes = _random_boxes(gen, 25)
    scores = torch.rand(25, generator=gen, dtype=torch.float64)
    assert nms_3d(boxes, scores, thr).tolist() == _brute_nms(boxes, scores, thr)


def test_batched_nms_keeps_overlapping_boxes_of_other_classes():
    boxes = torch.tensor([[0, 0, 0, 2, 2, 2], [0, 0, 0, 2, 2, 2.1], [0, 0, 0, 2, 2, 2]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64)
    assert batched_nms_3d(boxes, scores, torch.tensor([0, 0, 1]), 0.3).tolist() == [0, 2]


def test_encode_decode_round_trip():
    gen = torch.Generator().manual_seed(1)
    rois, boxes = _random_boxes(gen, 10), _random_boxes(gen, 10)
    assert torch.allclose(decode_boxes(encode_boxes(boxes, rois), rois), boxes, atol=1e-9)


def test_average_precision_hand_computed():
    gt = [torch.tensor([[0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3]], dtype=torch.float64)]
    # scores: a TP (0.9), a FP far away (0.8), a TP (0.7): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    pred = [torch.tensor([[0, 0, 0, 1, 1, 1], [5, 5, 5, 6, 6, 6], [2, 2, 2, 3, 3, 3.2]], dtype=torch.float64)]
    scores = [torch.tensor([0.9, 0.8, 0.7])]
    assert average_precision_3d(pred, scores, gt, 0.5) == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    assert average_precision_3d([pred[0][:0]], [scores[0][:0]], gt, 0.5) == 0.0
