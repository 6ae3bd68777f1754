"""Instance metrics of physinv.core.metrics against torchmetrics and hand computations."""

import math

import pytest
import torch
from torchmetrics.functional.classification import multiclass_jaccard_index
from torchmetrics.functional.detection import panoptic_quality as tm_pq

from physinv.core import metrics


def _random_maps(gen, n_views=3, h=12, w=12, k=4):
    """Blocky random label maps (so segments are large enough for IoU > 0.5 matches)."""
    coarse = torch.randint(0, k, (n_views, h // 3, w // 3), generator=gen)
    return coarse.repeat_interleave(3, 1).repeat_interleave(3, 2)


def _tm_thing_pq(pred, target, things):
    """torchmetrics PQ per class (category map = class, id map = ids), for the thing classes."""
    pred_cat = torch.where(pred[0] > 0, pred[1], torch.zeros_like(pred[1]))
    tgt_cat = torch.where(target[0] > 0, target[1], torch.zeros_like(target[1]))
    p = torch.stack([pred_cat, pred[0]], -1)[None]
    t = torch.stack([tgt_cat, target[0]], -1)[None]
    per_class = tm_pq(p, t, things=set(things), stuffs={0}, return_per_class=True)
    return per_class.reshape(-1)


@pytest.mark.parametrize("seed", range(5))
def test_instance_pq_matches_torchmetrics_per_thing_class(seed):
    gen = torch.Generator().manual_seed(seed)
    target_ids = _random_maps(gen, 1)[0]
    pred_ids = target_ids.clone()
    pred_ids[torch.rand(pred_ids.shape, generator=gen) < 0.15] = 0  # some noise
    pred_ids[:3, :3] = 7  # an extra (false) segment
    target_cat = torch.where(target_ids > 0, 1 + target_ids % 2, 0)
    pred_cat = torch.where(pred_ids > 0, 1 + pred_ids % 2, 0)
    ours = metrics.instance_pq(pred_ids, target_ids, pred_cat, target_cat)
    ref = _tm_thing_pq((pred_ids, pred_cat), (target_ids, target_cat), things={1, 2})
    # torchmetrics orders per-class values as sorted(things) + sorted(stuffs): classes 1, 2 then stuff 0
    present = [c for c in (1, 2) if (target_cat == c).any() or (pred_cat == c).any()]
    expected = torch.stack([ref[c - 1] for c in present]).mean()
    assert ours["pq"].item() == pytest.approx(expected.item(), abs=1e-6)


def test_class_agnostic_pq_is_one_for_relabelled_views_but_pq_scene_is_not():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, :4, :4], target[:, 4:, 4:] = 1, 2
    pred = target.clone()
    pred[1] = torch.where(target[1] == 1, 2, torch.where(target[1] == 2, 1, 0))  # ids swapped in view 1
    assert metrics.pq_per_view(pred, target).item() == pytest.approx(1.0)
    # scene level: pred id 1 = {obj1 in view 0, obj2 in view 1}: IoU with each target object 16/48 < 0.5
    assert metrics.pq_scene(pred, target).item() == pytest.approx(0.0)
    assert metrics.pq_scene(target, target).item() == pytest.approx(1.0)


def test_pq_hand_computed_partial_match():
    target = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 0, 0, 0]])
    pred = torch.tensor([[5, 5, 5, 5, 5, 0, 0, 0, 9, 9]])
    # TP: (5 vs 1) IoU 4/5; FN: 2; FP: 9 -> PQ = 0.8 / (1 + 0.5 + 0.5)
    assert metrics.instance_pq(pred, target)["pq"].item() == pytest.approx(0.8 / 2.0)
    assert math.isnan(metrics.instance_pq(torch.zeros(3, 3), torch.zeros(3, 3))["pq"].item())


@pytest.mark.parametrize("seed", range(4))
def test_matched_miou_matches_torchmetrics_jaccard_after_relabelling(seed):
    gen = torch.Generator().manual_seed(seed)
    target = _random_maps(gen, 2, k=4)
    perm = torch.tensor([0, 13, 11, 12])  # pred ids are a permutation of the target ids
    pred = perm[target]
    pred[torch.rand(pred.shape, generator=gen) < 0.2] = 0
    m = metrics.hungarian_match(pred, target)
    ours = metrics.matched_miou(pred, target)
    # relabel pred with the matching, unmatched ids -> an extra class, and ask torchmetrics per class
    lut = {int(p): int(t) for t, p in zip(m["target"], m["pred"]) if p > 0}
    relabelled = torch.tensor([lut.get(int(v), 0 if v == 0 else 5) for v in pred.reshape(-1)])
    per_class = multiclass_jaccard_index(relabelled, target.reshape(-1), num_classes=6, average="none")
    classes = [int(t) for t in m["target"]]
    assert ours.item() == pytest.approx(per_class[classes].mean().item(), abs=1e-6)
    assert sorted(lut.values()) == classes  # a permutation is recovered exactly
