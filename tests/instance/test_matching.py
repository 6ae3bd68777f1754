"""Mask matching on a hand-built 2-view case: the right instance, with occlusion from the depth."""

import math

import pytest
import torch

from physinv.core.camera import image_rays, intrinsics_from_fov, look_at
from physinv.instance.grid import lookup_labels
from physinv.instance.matching import IGNORE, match_masks, project_instances

RES = 32
AABB = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])


def _scene():
    """20^3 grid: instance 1 = tall box at x < 0, instance 2 = short box at x > 0 (same y, z range
    at the bottom), so a camera on +x sees 2 in front of 1 and only 1's top above it."""
    n = 20
    c = (torch.arange(n) + 0.5) / n * 2 - 1
    x, y, z = torch.meshgrid(c, c, c, indexing="ij")
    labels = torch.zeros(n, n, n, dtype=torch.long)
    labels[(x > -0.6) & (x < -0.1) & (y.abs() < 0.3) & (z > -0.3) & (z < 0.6)] = 1
    labels[(x > 0.1) & (x < 0.6) & (y.abs() < 0.3) & (z > -0.3) & (z < 0.2)] = 2
    cams = torch.stack([
        look_at(torch.tensor([0.0, -0.01, 3.0]), torch.zeros(3)),  # from the top: both side by side
        look_at(torch.tensor([3.0, 0.0, 0.0]), torch.zeros(3)),  # from +x: 2 occludes the bottom of 1
    ])
    intr = intrinsics_from_fov(math.radians(40), RES, RES).float().expand(2, 4)
    return labels, cams, intr


def _ray_march(labels, c2w, intr):
    """Ground-truth depth and visible instance by fine ray marching of the label grid."""
    depth, seen = [], []
    t = torch.linspace(1.0, 5.0, 2000)
    for v in range(len(c2w)):
        o, d = image_rays(c2w[v], intr[v], RES, RES)
        lab = lookup_labels(labels, AABB, o[..., None, :] + t[:, None] * d[..., None, :])
        hit = (lab > 0).any(-1)
        first = torch.argmax((lab > 0).long(), -1)
        depth.append(torch.where(hit, t[first], torch.zeros(())))
        seen.append(torch.gather(lab, -1, first[..., None])[..., 0] * hit)
    return torch.stack(depth), torch.stack(seen)


def test_projection_uses_occlusion():
    labels, c2w, intr = _scene()
    depth, seen = _ray_march(labels, c2w, intr)
    proj = project_instances(labels, AABB, c2w, intr, RES, RES, depth)
    assert (proj == seen).float().mean() > 0.99
    assert (seen[1] == 1).sum() > 10 and (seen[1] == 2).sum() > (seen[1] == 1).sum()  # 1 mostly hidden in view 1


@pytest.mark.parametrize("rule", ["greedy", "hungarian"])
def test_matching_assigns_the_right_instance(rule):
    labels, c2w, intr = _scene()
    depth, seen = _ray_march(labels, c2w, intr)
    proj = project_instances(labels, AABB, c2w, intr, RES, RES, depth)
    # the segmenter: other ids in each view, boundaries shifted by a pixel, a false blob in view 0
    masks = torch.zeros_like(seen)
    masks[0] = torch.roll(torch.where(seen[0] == 1, 7, torch.where(seen[0] == 2, 9, 0)), 1, dims=1)
    masks[1] = torch.roll(torch.where(seen[1] == 1, 5, torch.where(seen[1] == 2, 3, 0)), 1, dims=0)
    masks[0, :3, :3] = 11
    out = match_masks(masks, proj, rule)
    assert (out[0][masks[0] == 7] == 1).all() and (out[0][masks[0] == 9] == 2).all()
    assert (out[1][masks[1] == 5] == 1).all() and (out[1][masks[1] == 3] == 2).all()
    assert (out[0][masks[0] == 11] == IGNORE).all() and (out[masks == 0] == IGNORE).all()


def test_greedy_lets_two_parts_take_one_instance_hungarian_does_not():
    labels, c2w, intr = _scene()
    depth, seen = _ray_march(labels, c2w, intr)
    proj = project_instances(labels, AABB, c2w, intr, RES, RES, depth)[:1]
    part = seen[:1].clone()
    u = torch.arange(RES).expand(RES, RES)[None]
    masks = torch.where(part == 2, torch.where(u < u[part == 2].float().mean(), 4, 6), 0)  # 2 cut in two
    greedy, hung = match_masks(masks, proj, "greedy"), match_masks(masks, proj, "hungarian")
    assert set(greedy[masks > 0].tolist()) == {2}
    assert set(hung[masks > 0].tolist()) == {2, IGNORE}
