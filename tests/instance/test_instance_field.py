"""The instance field and its compositing along a frozen NeRF's weights."""

import torch

from physinv.core.volume import RaySamples
from physinv.instance.field import InstanceField, composite_logits


def _samples():
    ray_indices = torch.tensor([0, 0, 0, 1, 1, 2])
    t = torch.arange(6, dtype=torch.float32)
    return RaySamples(ray_indices, t, t + 1, n_rays=4)


def test_composite_is_the_weighted_sum_plus_background():
    samples = _samples()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen)
    weights = torch.tensor([0.2, 0.5, 0.1, 0.3, 0.3, 0.0])
    bg = torch.tensor([10.0, 0.0, 0.0])
    out = composite_logits(logits, weights, samples, bg)
    expected = torch.stack([
        (weights[:3, None] * logits[:3]).sum(0) + 0.2 * bg,
        (weights[3:5, None] * logits[3:5]).sum(0) + 0.4 * bg,
        bg,  # a zero-weight sample
        bg,  # a ray without samples
    ])
    assert torch.allclose(out, expected, atol=1e-6)


def test_empty_rays_are_background():
    field = InstanceField(4, 16, torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    samples = RaySamples(torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0), n_rays=5)
    out = composite_logits(torch.zeros(0, 4), torch.zeros(0), samples, field.background())
    assert (out.argmax(-1) == 0).all() and out.softmax(-1)[:, 0].min() > 0.999


def test_the_nerf_feature_gets_no_gradient():
    field = InstanceField(3, 8, torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    pts = torch.rand(10, 3) * 2 - 1
    geo = torch.randn(10, 8, requires_grad=True)
    field(pts, geo).sum().backward()
    assert geo.grad is None
    assert field.encoding.tables[0].grad is not None and field.mlp.out.weight.grad.abs().sum() > 0
