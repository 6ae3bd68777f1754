"""Quadrature against analytic slabs; packed and padded layouts agree."""

import math

import torch

from physinv.core.volume import (
    alpha_from_density,
    pack_padded,
    render_packed,
    render_padded,
    weights_from_alpha,
    weights_from_density,
)


def _slab(sigma0=2.0, a=1.0, b=2.5, far=4.0, n=4000):
    """One ray through a homogeneous slab [a, b] of density sigma0, sampled finely on [0, far]."""
    edges = torch.linspace(0.0, far, n + 1, dtype=torch.float64)
    t_mid = 0.5 * (edges[1:] + edges[:-1])
    delta = edges[1:] - edges[:-1]
    sigma = torch.where((t_mid > a) & (t_mid < b), sigma0, 0.0)
    return sigma[None], delta[None], t_mid[None], edges


def test_slab_transmittance_and_opacity_match_beer_lambert():
    sigma0, a, b = 2.0, 1.0, 2.5
    sigma, delta, t_mid, edges = _slab(sigma0, a, b)
    out = render_padded(sigma, delta, t_mid)
    # transmittance at the start of each interval = exp(-sigma0 * path length inside the slab so far)
    start = edges[:-1]
    expected_T = torch.exp(-sigma0 * (start.clamp(a, b) - a))
    assert torch.allclose(out["transmittance"][0], expected_T, atol=2e-3)
    assert math.isclose(out["opacity"].item(), 1 - math.exp(-sigma0 * (b - a)), rel_tol=1e-9)


def test_slab_expected_depth_is_analytic():
    sigma0, a, b = 2.0, 1.0, 2.5
    sigma, delta, t_mid, _ = _slab(sigma0, a, b, n=20000)
    depth = render_padded(sigma, delta, t_mid)["depth"].item()
    # int_a^b t sigma exp(-sigma (t - a)) dt
    L = b - a
    expected = a * (1 - math.exp(-sigma0 * L)) + (1 - math.exp(-sigma0 * L) * (1 + sigma0 * L)) / sigma0
    assert abs(depth - expected) < 1e-4


def test_exclusive_cumprod_matches_exp_cumsum():
    g = torch.Generator().manual_seed(0)
    sigma = torch.rand(5, 33, generator=g, dtype=torch.float64) * 5
    delta = torch.rand(5, 33, generator=g, dtype=torch.float64) * 0.3
    w1, T1, _ = weights_from_density(sigma, delta)
    w2, T2 = weights_from_alpha(alpha_from_density(sigma, delta))
    assert torch.allclose(T1, T2, atol=1e-12) and torch.allclose(w1, w2, atol=1e-12)
    assert (w1.sum(-1) <= 1 + 1e-12).all()


def test_background_fills_the_transparent_part():
    sigma = torch.zeros(2, 8)
    delta = torch.full((2, 8), 0.1)
    t = torch.cumsum(delta, -1)
    rgb = torch.rand(2, 8, 3)
    out = render_padded(sigma, delta, t, {"rgb": rgb}, background=torch.tensor([1.0, 0.5, 0.25]))
    assert torch.allclose(out["rgb"], torch.tensor([[1.0, 0.5, 0.25]] * 2))


def test_packed_and_padded_agree_including_gradients():
    g = torch.Generator().manual_seed(1)
    R, S = 7, 19
    sigma = (torch.rand(R, S, generator=g, dtype=torch.float64) * 8).requires_grad_()
    delta = torch.rand(R, S, generator=g, dtype=torch.float64) * 0.2
    t_mid = torch.cumsum(delta, -1)
    feat = torch.rand(R, S, 4, generator=g, dtype=torch.float64).requires_grad_()
    mask = torch.rand(R, S, generator=g) > 0.3  # ragged: drop samples -> packed rays of varying length
    mask[3] = False  # a ray without samples
    bg = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    # padded reference: dropped samples have zero density (they contribute nothing)
    sigma_pad = torch.where(mask, sigma, torch.zeros_like(sigma))
    ref = render_padded(sigma_pad, delta, t_mid, {"rgb": feat}, background=bg)
    sp, ridx = pack_padded(sigma, mask)
    out = render_packed(sp, pack_padded(delta, mask)[0], pack_padded(t_mid, mask)[0], ridx, R, {"rgb": pack_padded(feat, mask)[0]}, background=bg)
    for key in ("rgb", "opacity", "depth"):
        assert torch.allclose(out[key], ref[key], atol=1e-12), key
    assert torch.allclose(out["weights"], ref["weights"][mask], atol=1e-12)
    assert torch.allclose(out["rgb"][3], bg)
    loss_ref = (ref["rgb"] ** 2).sum() + ref["depth"].sum()
    g_ref = torch.autograd.grad(loss_ref, (sigma, feat))
    loss = (out["rgb"] ** 2).sum() + out["depth"].sum()
    g_out = torch.autograd.grad(loss, (sigma, feat))
    assert torch.allclose(g_out[0] * mask, g_ref[0] * mask, atol=1e-10)
    assert torch.allclose(g_out[1], g_ref[1], atol=1e-10)


def test_packed_precision_survives_many_opaque_rays():
    # many earlier rays with huge optical depth must not spoil the scan of the last ray (float32 input)
    R, S = 2000, 64
    sigma = torch.full((R, S), 1e4)
    sigma[-1] = 0.5
    delta = torch.full((R, S), 0.05)
    t = torch.cumsum(delta, -1)
    ref = render_padded(sigma[-1:], delta[-1:], t[-1:])
    out = render_packed(sigma.reshape(-1), delta.reshape(-1), t.reshape(-1), torch.arange(R).repeat_interleave(S), R)
    assert torch.allclose(out["opacity"][-1], ref["opacity"][0], atol=1e-5)


def test_render_samples_composites_every_feature_on_both_layouts():
    """The protocol's compositor: the regular fast path (per_ray) equals the packed path, every
    feature a fields function returns is composited (vector or scalar), and composite_samples
    with the rendered weights reproduces them."""
    from physinv.core.sampling import centred_intervals
    from physinv.core.volume import RaySamples, composite_samples, render_samples

    g = torch.Generator().manual_seed(2)
    R, S = 5, 11
    t = torch.sort(torch.rand(R, S, generator=g, dtype=torch.float64) * 3, -1).values
    delta = torch.rand(R, S, generator=g, dtype=torch.float64) * 0.3
    regular = centred_intervals(t, delta)
    packed = RaySamples(regular.ray_indices, regular.t_starts, regular.t_ends, R)  # same samples, no per_ray
    sigma = torch.rand(R * S, generator=g, dtype=torch.float64) * 5
    albedo = torch.rand(R * S, 3, generator=g, dtype=torch.float64)
    calls = []

    def fields_fn(t_starts, t_ends, ray_indices):
        calls.append(len(t_starts))
        return {"sigma": sigma, "albedo": albedo, "distance": 0.5 * (t_starts + t_ends), "one": torch.ones_like(t_starts)}

    fast, slow = render_samples(regular, fields_fn), render_samples(packed, fields_fn)
    assert calls == [R * S, R * S]  # one evaluation per render
    for key in ("albedo", "distance", "one", "opacity", "depth", "weights", "transmittance"):
        assert torch.allclose(fast[key], slow[key], atol=1e-12), key
    assert torch.allclose(fast["one"], fast["opacity"]) and torch.allclose(fast["distance"], fast["depth"])
    again = composite_samples(fast["weights"], regular, {"albedo": albedo})
    assert torch.allclose(again["albedo"], fast["albedo"], atol=1e-12)
    # the reference quadrature of one ray: points t, lengths delta
    w, _, _ = weights_from_density(sigma.view(R, S), delta)
    assert torch.allclose(fast["albedo"], (w.unsqueeze(-1) * albedo.view(R, S, 3)).sum(1), atol=1e-12)
