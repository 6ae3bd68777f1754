"""Microfacet BRDF (GGX), its spherical-Gaussian form as PhySG renders it, and Disney base colour / metallic.

Directions are unit vectors pointing *away* from the surface (``wi`` towards the light, ``wo``
towards the viewer); ``normal`` is the unit surface normal. ``roughness`` is the perceptual (Disney)
roughness r in (0, 1]; the GGX width is alpha = r^2. BRDF values are in 1/steradian; radiance is
linear (any unit; the rendering equation is linear in it).

Exact model (proposal eq. 2): f_s = D(h) F(wi, h) G(wi, wo) / (4 (n.wi)(n.wo)) with
D = alpha^2 / (pi ((n.h)^2 (alpha^2 - 1) + 1)^2) (GGX / Trowbridge-Reitz), Schlick's Fresnel
F = F0 + (1 - F0)(1 - wo.h)^5 and Smith's separable masking G = G1(wi) G1(wo).

SG form (PhySG, after Wang et al. 2009): D(h) ~ 1/(pi alpha^2) exp(2/alpha^2 (h.n - 1)), an SG in h;
the spherical warp h -> wi = reflect(wo, h) maps it to an SG in wi around the mirror direction of
wo with sharpness divided by 4 |wo.n|; F G / (4 (n.wi)(n.wo)) is taken constant over the lobe and
evaluated at the lobe's axis (PhySG's "M(x) constant" approximation, proposal section V-B-3).

Deviations / choices (tests in ``tests/core/test_brdf.py``):

1. Smith G in the SG path is the Schlick-GGX form with k = (r + 1)^2 / 8 as PhySG's code uses
   (UE4's remapping); the exact BRDF uses the exact Smith-GGX G1 = 2c / (c + sqrt(alpha^2 + (1 - alpha^2) c^2)).
2. Fresnel in the SG path is Schlick's (1 - c)^5 exactly; PhySG's code uses the spherical-Gaussian
   approximation 2^{(-5.55473 c - 6.8316) c} of it (within 1 % of Schlick) — ``test_sg_specular_matches_quadrature``.
3. The diffuse term is Lambertian albedo / pi (PhySG); with Disney parameters the diffuse albedo is
   base_colour (1 - metallic) and F0 = 0.04 (1 - metallic) + base_colour metallic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from physinv.core import sg

DIELECTRIC_F0 = 0.04


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)


def ggx_ndf(cos_nh: Tensor, roughness: Tensor) -> Tensor:
    """GGX normal distribution D(h) (1/sr) from cos(n, h) (..., 1) and roughness r (alpha = r^2)."""
    a2 = roughness.pow(4)
    c = cos_nh.clamp(min=0.0)
    return a2 / (math.pi * (c * c * (a2 - 1.0) + 1.0).square())


def fresnel_schlick(f0: Tensor, cos: Tensor) -> Tensor:
    """Schlick's Fresnel F0 + (1 - F0)(1 - cos)^5; f0 (..., C), cos (..., 1) -> (..., C)."""
    return f0 + (1.0 - f0) * (1.0 - cos.clamp(0.0, 1.0)).pow(5)


def smith_g1_ggx(cos: Tensor, roughness: Tensor) -> Tensor:
    """Exact Smith masking for GGX: 2c / (c + sqrt(alpha^2 + (1 - alpha^2) c^2)), c = cos(n, w) >= 0."""
    a2 = roughness.pow(4)
    c = cos.clamp(min=0.0)
    return 2.0 * c / (c + torch.sqrt(a2 + (1.0 - a2) * c * c) + 1e-12)


def smith_g1_schlick(cos: Tensor, roughness: Tensor) -> Tensor:
    """Schlick-GGX masking with k = (r + 1)^2 / 8 (PhySG's and UE4's choice): c / (c (1 - k) + k)."""
    k = (roughness + 1.0).square() / 8.0
    c = cos.clamp(min=0.0)
    return c / (c * (1.0 - k) + k + 1e-12)


def ggx_specular(normal: Tensor, wi: Tensor, wo: Tensor, roughness: Tensor, f0: Tensor) -> Tensor:
    """Exact GGX specular BRDF D F G / (4 (n.wi)(n.wo)) (1/sr); zero below either horizon.
    normal, wi, wo: (..., 3) unit; roughness (..., 1); f0 (..., C) -> (..., C)."""
    h = F.normalize(wi + wo, dim=-1)
    n_wi, n_wo = _dot(normal, wi), _dot(normal, wo)
    d = ggx_ndf(_dot(normal, h), roughness)
    fr = fresnel_schlick(f0, _dot(wo, h))
    g = smith_g1_ggx(n_wi, roughness) * smith_g1_ggx(n_wo, roughness)
    value = d * fr * g / (4.0 * n_wi.clamp(min=1e-6) * n_wo.clamp(min=1e-6))
    return torch.where((n_wi > 0) & (n_wo > 0), value, torch.zeros_like(value))


def ndf_sg(normal: Tensor, roughness: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SG approximation of the GGX D as a function of h: (axis = n, sharpness 2/alpha^2, amplitude 1/(pi alpha^2))."""
    inv_a2 = 1.0 / roughness.pow(4)
    return normal, 2.0 * inv_a2, inv_a2 / math.pi


def specular_sg(normal: Tensor, wo: Tensor, roughness: Tensor, f0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The specular BRDF times nothing else, as one SG in wi (PhySG): D's SG warped to the reflection
    direction, times F G / (4 (n.wi)(n.wo)) evaluated on the lobe axis.

    normal, wo: (..., 3) unit; roughness (..., 1); f0 (..., C) specular albedo. Returns axis (..., 3),
    sharpness (..., 1), amplitude (..., C) (1/sr).
    """
    axis_h, sharp_h, amp_h = ndf_sg(normal, roughness)
    cos_o = _dot(normal, wo).clamp(min=0.0)
    axis = F.normalize(2.0 * cos_o * normal - wo, dim=-1)  # mirror direction of wo
    sharp = sharp_h / (4.0 * cos_o + sg.TINY)
    h = F.normalize(axis + wo, dim=-1)
    fr = fresnel_schlick(f0, _dot(wo, h))
    cos_i = _dot(axis, normal).clamp(min=0.0)
    g = smith_g1_schlick(cos_i, roughness) * smith_g1_schlick(cos_o, roughness)
    amp = amp_h * fr * g / (4.0 * cos_i * cos_o + sg.TINY)
    return axis, sharp, amp


def render_sg(
    normal: Tensor,
    wo: Tensor,
    light_axis: Tensor,
    light_sharpness: Tensor,
    light_amplitude: Tensor,
    diffuse_albedo: Tensor,
    roughness: Tensor | None = None,
    specular_albedo: Tensor | None = None,
) -> dict[str, Tensor]:
    """Closed-form rendering equation under an SG light (PhySG): L_o = int L_i (a/pi + f_s) max(n.wi, 0) dwi.

    normal, wo: (N, 3) unit; light: axis (K, 3), sharpness (K, 1), amplitude (K, 3) radiance;
    diffuse_albedo (N, 3) in [0, 1]; roughness (N, 1) or (1, 1); specular_albedo (N, 1|3) or None
    (no specular). Returns ``diffuse``, ``specular``, ``rgb`` (N, 3) linear radiance, each clamped >= 0.
    """
    n = normal[:, None]  # (N, 1, 3)
    la, ls, lm = light_axis[None], light_sharpness[None], light_amplitude[None]  # (1, K, .)
    diffuse = sg.sg_cosine_integral(la, ls, lm, n).sum(1) * diffuse_albedo / math.pi
    diffuse = diffuse.clamp(min=0.0)
    out = {"diffuse": diffuse}
    if specular_albedo is None or roughness is None:
        out["specular"] = torch.zeros_like(diffuse)
    else:
        b_axis, b_sharp, b_amp = specular_sg(normal, wo, roughness.expand(normal.shape[0], 1), specular_albedo.expand(normal.shape[0], -1))
        p_axis, p_sharp, p_amp = sg.product(la, ls, lm, b_axis[:, None], b_sharp[:, None], b_amp[:, None])
        out["specular"] = sg.sg_cosine_integral(p_axis, p_sharp, p_amp, n).sum(1).clamp(min=0.0)
    out["rgb"] = out["diffuse"] + out["specular"]
    return out


def disney_to_lobes(base_colour: Tensor, metallic: Tensor, roughness: Tensor) -> dict[str, Tensor]:
    """Disney base colour (..., 3), metallic (..., 1), roughness (..., 1) -> ``diffuse_albedo`` (..., 3),
    ``f0`` (..., 3) specular reflectance at normal incidence, ``roughness`` (..., 1) (note 3)."""
    diffuse = base_colour * (1.0 - metallic)
    f0 = DIELECTRIC_F0 * (1.0 - metallic) + base_colour * metallic
    return {"diffuse_albedo": diffuse, "f0": f0, "roughness": roughness}
