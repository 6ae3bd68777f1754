"""GGX microfacet BRDF and PhySG's SG form of it, against quadrature of the exact lobe."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from physinv.core import brdf, sg

N_QUAD = 400_000


@pytest.fixture(scope="module")
def quad():
    return sg.fibonacci_sphere(N_QUAD, dtype=torch.float64), 4.0 * math.pi / N_QUAD


NORMAL = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)


def t(*values):
    return torch.tensor([list(values)], dtype=torch.float64)


@pytest.mark.parametrize("roughness", [0.2, 0.5, 0.9])
def test_ggx_ndf_is_normalised(quad, roughness):
    """int D(h) (n.h) dh = 1: the projected microfacet area is the macro-surface's."""
    pts, w = quad
    cos = (pts @ NORMAL[0]).clamp(min=0)[:, None]
    assert float((brdf.ggx_ndf(cos, t(roughness)) * cos).sum() * w) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("roughness, tol", [(0.2, 0.005), (0.3, 0.01), (0.5, 0.04)])
def test_sg_ndf_matches_ggx_peak_and_normalisation(quad, roughness, tol):
    """The SG of D has D's peak value and keeps its normalisation to within ``tol`` for glossy lobes
    (it loses energy at large roughness: 0.88 at r = 0.7, which PhySG accepts)."""
    pts, w = quad
    r = t(roughness)
    axis, sharp, amp = brdf.ndf_sg(NORMAL, r)
    assert float(amp) == pytest.approx(float(brdf.ggx_ndf(torch.ones(1, 1, dtype=torch.float64), r)), rel=1e-12)
    cos = (pts @ NORMAL[0]).clamp(min=0)[:, None]
    assert float((sg.evaluate(pts, axis, sharp, amp) * cos).sum() * w) == pytest.approx(1.0, abs=tol)


def test_fresnel_and_smith_limits():
    f0 = t(0.04, 0.5, 1.0)
    assert torch.allclose(brdf.fresnel_schlick(f0, t(1.0)), f0)
    assert torch.allclose(brdf.fresnel_schlick(f0, t(0.0)), torch.ones_like(f0))
    for g1 in (brdf.smith_g1_ggx, brdf.smith_g1_schlick):
        assert float(g1(t(1.0), t(0.5))) == pytest.approx(1.0, abs=1e-9)
        assert float(g1(t(0.0), t(0.5))) == pytest.approx(0.0, abs=1e-9)
    # a mirror-smooth surface does not mask
    assert float(brdf.smith_g1_ggx(t(0.3), t(1e-3))) == pytest.approx(1.0, abs=1e-4)


def test_ggx_specular_is_reciprocal_and_zero_below_horizon():
    g = torch.Generator().manual_seed(0)
    wi = F.normalize(torch.randn(50, 3, generator=g, dtype=torch.float64).abs() + 0.05, dim=-1)
    wo = F.normalize(torch.randn(50, 3, generator=g, dtype=torch.float64).abs() + 0.05, dim=-1)
    n, r, f0 = NORMAL.expand(50, 3), t(0.4).expand(50, 1), t(0.1, 0.5, 0.9).expand(50, 3)
    assert torch.allclose(brdf.ggx_specular(n, wi, wo, r, f0), brdf.ggx_specular(n, wo, wi, r, f0))
    below = wi * t(1.0, 1.0, -1.0)
    assert brdf.ggx_specular(n, below, wo, r, f0).abs().max() == 0


def _light():
    return F.normalize(t(-0.5, 0.2, 1.0), dim=-1), t(4.0), t(1.0, 0.8, 0.6)


@pytest.mark.parametrize("roughness", [0.2, 0.4, 0.6])
@pytest.mark.parametrize("view_deg", [10.0, 40.0])
def test_sg_specular_matches_quadrature(quad, roughness, view_deg):
    """PhySG's closed-form specular under an SG light vs quadrature of the exact GGX lobe:
    within 10 % away from grazing views (at 65 degrees the warp loses ~40 %, a known limit of the
    SG warp that PhySG shares)."""
    pts, w = quad
    wo = t(math.sin(math.radians(view_deg)), 0.0, math.cos(math.radians(view_deg)))
    r, f0 = t(roughness), t(0.5, 0.5, 0.5)
    la, ls, lm = _light()
    radiance = sg.evaluate_mixture(pts, la, ls, lm)
    n = len(pts)
    f = brdf.ggx_specular(NORMAL.expand(n, 3), pts, wo.expand(n, 3), r.expand(n, 1), f0.expand(n, 3))
    numeric = (radiance * f * (pts @ NORMAL[0]).clamp(min=0)[:, None]).sum(0) * w
    closed = brdf.render_sg(NORMAL, wo, la, ls, lm, torch.zeros(1, 3, dtype=torch.float64), r, f0)["specular"][0]
    assert torch.allclose(closed, numeric, rtol=0.10)


def test_sg_diffuse_matches_quadrature(quad):
    """Lambertian a/pi under an SG light: closed form vs quadrature, within 2 %."""
    pts, w = quad
    la, ls, lm = _light()
    albedo = t(0.8, 0.5, 0.2)
    numeric = (sg.evaluate_mixture(pts, la, ls, lm) * (pts @ NORMAL[0]).clamp(min=0)[:, None]).sum(0) * w * albedo[0] / math.pi
    closed = brdf.render_sg(NORMAL, NORMAL, la, ls, lm, albedo)["rgb"][0]
    assert torch.allclose(closed, numeric, rtol=0.02)


def test_disney_parameterisation():
    base = t(0.9, 0.4, 0.1)
    dielectric = brdf.disney_to_lobes(base, t(0.0), t(0.5))
    assert torch.allclose(dielectric["diffuse_albedo"], base) and torch.allclose(dielectric["f0"], torch.full_like(base, 0.04))
    metal = brdf.disney_to_lobes(base, t(1.0), t(0.5))
    assert torch.allclose(metal["diffuse_albedo"], torch.zeros_like(base)) and torch.allclose(metal["f0"], base)
