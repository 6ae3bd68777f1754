"""Sphere tracing, IDR's implicit hit-point gradient, normals, eikonal and mask losses, geometric init."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from physinv.core import sdf
from physinv.core.encoding import positional_encoding
from physinv.core.field import SDFMLP


class SphereSDF(nn.Module):
    """|x - c| - r with learnable centre and radius."""

    def __init__(self, centre=(0.1, -0.05, 0.2), radius=0.5):
        super().__init__()
        self.centre = nn.Parameter(torch.tensor(centre, dtype=torch.float64))
        self.radius = nn.Parameter(torch.tensor(radius, dtype=torch.float64))

    def forward(self, x):
        return (x - self.centre).norm(dim=-1) - self.radius


def rays(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    origins = F.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1) * 3.0
    target = 0.35 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return origins, F.normalize(target - origins, dim=-1)


def analytic_hit(o, d, centre, radius):
    oc = o - centre
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius**2)
    return -b - torch.sqrt(disc.clamp(min=0)), disc > 0


def test_sphere_trace_hits_an_analytic_sphere_at_the_right_distance():
    f = SphereSDF()
    o, d = rays(200)
    out = sdf.sphere_trace(f, o, d, radius=1.0, max_steps=50)
    t_true, hits = analytic_hit(o, d, f.centre.detach(), f.radius.detach())
    assert torch.equal(out["hit"], hits)
    # |f| < threshold at the hit; along a grazing ray that is a larger distance error, threshold / |cos|
    assert f(o[hits] + out["t"][hits, None] * d[hits]).abs().max() < 5e-5
    assert (out["t"][hits] - t_true[hits]).abs().max() < 1e-3
    # misses keep their minimum-SDF point: the closest approach to the sphere's centre (ray-wise)
    miss = ~hits & sdf.ray_sphere(o, d, 1.0)[2]  # misses that cross the bounding sphere
    assert miss.any()
    x = o[miss] + out["min_sdf_t"][miss, None] * d[miss]
    closest = o[miss] + ((f.centre.detach() - o[miss]) * d[miss]).sum(-1, keepdim=True) * d[miss]
    # f is 1-Lipschitz: within half the sample spacing (2 / 99 of the bounding sphere's diameter)
    assert (f(x) - f(closest)).detach().abs().max() < 0.5 * 2.0 / 99 + 1e-9


def test_secant_refinement_finds_the_surface_when_marching_stalls():
    """With 2 marching steps the tracer cannot converge; the sampled bracket + secant still lands on it."""
    f = SphereSDF()
    o, d = rays(100, seed=1)
    out = sdf.sphere_trace(f, o, d, radius=1.0, max_steps=2, n_samples=64, secant_steps=8)
    t_true, hits = analytic_hit(o, d, f.centre.detach(), f.radius.detach())
    assert torch.equal(out["hit"], hits)
    assert (out["t"][hits] - t_true[hits]).abs().max() < 1e-5


def test_a_march_that_overshoots_into_the_object_still_hits_the_first_crossing():
    """f = 1.9 (|x - c| - r) overshoots every step (the error goes e -> -0.9 e): after 5 steps many rays
    stop inside the sphere; the bracket must then be searched before the marched point."""
    f = SphereSDF()
    o, d = rays(200, seed=2)
    steep = lambda x: 1.9 * f(x)  # noqa: E731
    out = sdf.sphere_trace(steep, o, d, radius=1.0, max_steps=5, n_samples=64)
    t_true, hits = analytic_hit(o, d, f.centre.detach(), f.radius.detach())
    near = sdf.ray_sphere(o, d, 1.0)[0]
    # the march does leave rays inside: replay it and count them
    t = near.clone()
    for _ in range(5):
        t = t + steep(o + t[:, None] * d).detach()
    inside = hits & (steep(o + t[:, None] * d) < -5e-5)
    assert inside.sum() > 10
    assert torch.equal(out["hit"], hits)
    assert (out["t"][hits] - t_true[hits]).abs().max() < 1e-5


def test_hit_point_gradient_matches_finite_differences():
    f = SphereSDF()
    o, d = rays(32, seed=2)
    out = sdf.sphere_trace(f, o, d, max_steps=200, threshold=1e-10)  # the gradient is exact at the exact hit
    hit = out["hit"]
    o, d, t = o[hit], d[hit], out["t"][hit]
    x = sdf.surface_points(f, o, d, t)
    # the value is the traced point, moved by one Newton step along the ray (closer to the surface)
    assert (x - (o + t[:, None] * d)).abs().max() < 1e-8
    weights = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (weights * x).sum().backward()
    analytic = torch.cat([f.centre.grad, f.radius.grad[None]])
    eps = 1e-6
    numeric = []
    for k in range(4):
        plus, minus = SphereSDF(), SphereSDF()
        with torch.no_grad():
            for model, sign in ((plus, 1.0), (minus, -1.0)):
                if k < 3:
                    model.centre[k] += sign * eps
                else:
                    model.radius += sign * eps
        xs = []
        for model in (plus, minus):
            tt = sdf.sphere_trace(model, o, d, max_steps=200, threshold=1e-12)["t"]
            xs.append((weights * (o + tt[:, None] * d)).sum())
        numeric.append((xs[0] - xs[1]) / (2 * eps))
    assert torch.allclose(analytic, torch.stack(numeric), rtol=1e-4, atol=1e-6)


def test_normals_and_eikonal_on_an_exact_sdf():
    f = SphereSDF()
    x = torch.randn(50, 3, dtype=torch.float64)
    n = sdf.sdf_normals(f, x)
    assert torch.allclose(n, F.normalize(x - f.centre.detach(), dim=-1), atol=1e-9)
    _, grad = sdf.sdf_gradient(f, x)
    assert sdf.eikonal_loss(grad).item() < 1e-12
    assert sdf.eikonal_loss(2 * grad).item() == pytest.approx(1.0)


def test_mask_loss_and_schedule():
    min_sdf = torch.tensor([0.2, -0.1, 0.05, -0.3])
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0])
    hit = torch.tensor([False, True, False, True])
    loss = sdf.mask_loss(min_sdf, mask, hit, alpha=50.0)
    sel = torch.tensor([True, True, True, False])  # the last ray is a hit inside the mask: excluded
    expected = F.binary_cross_entropy_with_logits(-50 * min_sdf[sel], mask[sel], reduction="sum") / (50 * 4)
    assert loss.item() == pytest.approx(expected.item())
    assert sdf.mask_alpha(0, 1000) == 50.0 and sdf.mask_alpha(999, 1000) == 50.0 * 2**5
    assert sdf.mask_alpha(130, 1000) == 100.0


def test_normal_smoothness_is_the_patch_variance_on_valid_patches_only():
    flat = torch.tensor([0.0, 0.0, 1.0]).expand(3, 4, 3).clone()  # 3 patches of 4 equal normals
    valid = torch.tensor([True, True, False])
    assert sdf.normal_smoothness_loss(flat, valid).item() == 0.0
    bent = flat.clone()
    bent[1, 0] = torch.tensor([1.0, 0.0, 0.0])  # one normal of patch 1 turned by 90 degrees
    bent[2] = torch.randn(4, 3)  # an invalid patch (a ray off the object) does not count
    # patch 1: x = (1, 0, 0, 0) and z = (0, 1, 1, 1) each have unbiased variance 1/4; y has 0
    assert sdf.normal_smoothness_loss(bent, valid).item() == pytest.approx((0.0 + 0.25 / 3 * 2) / 2)
    assert sdf.normal_smoothness_loss(bent, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_geometric_init_is_a_sphere_sdf():
    """IDR's init: negative at the centre, positive outside, zero crossing near the radius, |grad| ~ 1."""
    torch.manual_seed(0)
    net = SDFMLP(3 * 13, 1, width=128, depth=4, skips=(2,), radius=0.5)
    fn = lambda x: net(positional_encoding(x, 6))[:, 0]  # noqa: E731
    dirs = F.normalize(torch.randn(200, 3), dim=-1)
    assert fn(torch.zeros(1, 3)).item() < -0.2
    assert (fn(dirs * 0.95) > 0).float().mean() > 0.95
    radial = torch.linspace(0.05, 0.95, 19)
    values = torch.stack([fn(dirs * r) for r in radial], -1)  # (200, 19)
    crossing = radial[(values > 0).float().argmax(-1)]
    assert (crossing.median() - 0.5).abs() < 0.15
    _, grad = sdf.sdf_gradient(fn, dirs * 0.5)
    assert (grad.norm(dim=-1).median() - 1.0).abs() < 0.3
