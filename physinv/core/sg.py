"""Spherical Gaussians (SGs): the one SG implementation of physinv.

An SG is ``G(v; xi, lam, mu) = mu * exp(lam * (v . xi - 1))`` (proposal eq. 3) with unit lobe axis
``xi``, sharpness ``lam > 0`` (1/steradian-like, dimensionless) and amplitude ``mu`` (any number of
channels, e.g. linear RGB radiance). Shapes follow one convention throughout:

    axis: (..., 3) unit vectors, sharpness: (..., 1), amplitude: (..., C)

so that a batch of K lobes is ``(K, 3), (K, 1), (K, C)`` and broadcasting against surface points
``(N, 1, 3)`` gives ``(N, K, .)``. Everything is closed form (product, sphere integral, PhySG's
hemispherical integral of an SG times the clamped cosine) so the rendering equation under an SG
light needs no sampling.

Equirectangular maps use Mitsuba 3's convention in the map's *local* frame: local +Y is the pole of
the top row, ``u = atan2(x, -z) / 2 pi`` wrapped to [0, 1) and ``v = acos(y) / pi``; a 3x3 (or 4x4)
``to_world`` rotation (a data set's ``envmap_to_world``) takes local directions to world ones.

Deviations / choices (each tied to a test in ``tests/core/test_sg.py``):

1. Product: the exact closed form ``lam_m = |lam1 xi1 + lam2 xi2|``, ``mu_m = mu1 mu2 e^{lam_m - lam1 - lam2}``
   (PhySG's "lambda trick" is the same formula rearranged) — ``test_product_is_pointwise``.
2. Hemispherical integral: PhySG's reference code's fitted approximation of ``int_{n.v>0} G(v) dv``
   (a logistic blend between the upper and lower "cap" integrals, with the fitted constants 1.6988,
   10.8438, 6.2201, 10.2415); ``sg_cosine_integral`` then uses the cosine-lobe fit (eq. 7) and the
   identity ``max(v.n, 0) ~ G_cos(v) - 31.7003`` restricted to the hemisphere —
   ``test_cosine_integral_matches_quadrature``.
3. The SG fit of an HDR map initialises the amplitudes by a non-negative-clamped weighted least
   squares on Fibonacci axes, then runs Adam on (axis, log sharpness, log amplitude) minimising the
   solid-angle-weighted squared error (PhySG fits its light the same way, from random amplitudes) —
   ``test_fit_envmap_recovers_sg_map``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# max(v.n, 0) ~ COS_AMPLITUDE * exp(COS_SHARPNESS (v.n - 1)) - COS_OFFSET  (proposal eq. 7, PhySG)
COS_AMPLITUDE = 32.7080
COS_SHARPNESS = 0.0315
COS_OFFSET = 31.7003
TINY = 1e-6


def evaluate(directions: Tensor, axis: Tensor, sharpness: Tensor, amplitude: Tensor) -> Tensor:
    """G(v) = mu exp(lam (v . xi - 1)). directions: (..., 3) unit; axis (..., 3); sharpness (..., 1);
    amplitude (..., C) (all broadcast) -> (..., C)."""
    cos = (directions * axis).sum(-1, keepdim=True)
    return amplitude * torch.exp(sharpness * (cos - 1.0))


def evaluate_mixture(directions: Tensor, axis: Tensor, sharpness: Tensor, amplitude: Tensor) -> Tensor:
    """Sum of K lobes at N directions: directions (N, 3); axis (K, 3); sharpness (K, 1); amplitude
    (K, C) -> (N, C)."""
    cos = directions @ axis.T  # (N, K)
    return torch.exp(sharpness.T * (cos - 1.0)) @ amplitude


def product(axis1: Tensor, sharpness1: Tensor, amplitude1: Tensor, axis2: Tensor, sharpness2: Tensor, amplitude2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form product of two SGs (broadcast): returns (axis (..., 3), sharpness (..., 1), amplitude (..., C)).

    G1 G2 = mu1 mu2 exp(lam1 xi1.v + lam2 xi2.v - lam1 - lam2) = mu_m exp(lam_m (xi_m . v - 1)) with
    lam_m = |lam1 xi1 + lam2 xi2|, xi_m = (lam1 xi1 + lam2 xi2) / lam_m, mu_m = mu1 mu2 exp(lam_m - lam1 - lam2).
    """
    summed = sharpness1 * axis1 + sharpness2 * axis2
    sharp = summed.norm(dim=-1, keepdim=True)
    sharp = torch.minimum(sharp, sharpness1 + sharpness2)  # rounding can exceed the triangle bound
    axis = summed / sharp.clamp(min=TINY)
    amp = amplitude1 * amplitude2 * torch.exp(sharp - sharpness1 - sharpness2)
    return axis, sharp, amp


def integral(sharpness: Tensor, amplitude: Tensor) -> Tensor:
    """Integral of an SG over the whole sphere: 2 pi mu / lam (1 - exp(-2 lam)). (..., 1), (..., C) -> (..., C)."""
    return 2.0 * math.pi * amplitude / sharpness * (-torch.expm1(-2.0 * sharpness))


def clamped_cosine_sg(normal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The SG of the cosine-lobe fit around ``normal`` (..., 3): (axis, sharpness (..., 1), amplitude (..., 1));
    max(v.n, 0) ~ G(v) - COS_OFFSET on the upper hemisphere."""
    ones = normal.new_ones(normal.shape[:-1] + (1,))
    return normal, ones * COS_SHARPNESS, ones * COS_AMPLITUDE


def hemisphere_integral(sharpness: Tensor, cos_beta: Tensor) -> Tensor:
    """Approximate integral of exp(lam (v . xi - 1)) over the hemisphere {v . n > 0}, where
    cos_beta = xi . n. sharpness, cos_beta: (..., 1) -> (..., 1) (steradians). PhySG's fit (note 2)."""
    lam = sharpness + TINY
    inv = 1.0 / lam
    t = torch.sqrt(lam) * (1.6988 + 10.8438 * inv) / (1.0 + 6.2201 * inv + 10.2415 * inv * inv)
    inv_a = torch.exp(-t)
    upper = cos_beta >= 0
    inv_b = torch.exp(-t * cos_beta.clamp(min=0.0))
    s_upper = (1.0 - inv_a * inv_b) / (1.0 - inv_a + inv_b - inv_a * inv_b)
    b = torch.exp(t * cos_beta.clamp(max=0.0))
    s_lower = (b - inv_a) / ((1.0 - inv_a) * (b + 1.0))
    s = torch.where(upper, s_upper, s_lower)
    cap_lower = 2.0 * math.pi * inv * (torch.exp(-lam) - torch.exp(-2.0 * lam))  # lobe pointing away
    cap_upper = 2.0 * math.pi * inv * (-torch.expm1(-lam))  # lobe along n
    return cap_lower * (1.0 - s) + cap_upper * s


def sg_cosine_integral(axis: Tensor, sharpness: Tensor, amplitude: Tensor, normal: Tensor) -> Tensor:
    """int_{S^2} G(v) max(v . n, 0) dv in closed form (PhySG): with the cosine fit
    max(v.n,0) ~ G_cos(v) - a on the hemisphere, = int_H G G_cos - a int_H G.

    axis (..., 3), sharpness (..., 1), amplitude (..., C), normal (..., 3) (broadcast) -> (..., C); clamped at 0
    per lobe is left to the caller (the sum over lobes is clamped in PhySG).
    """
    cos_axis, cos_sharp, cos_amp = clamped_cosine_sg(normal)
    p_axis, p_sharp, p_amp = product(cos_axis, cos_sharp, cos_amp, axis, sharpness, amplitude)
    dot_p = (p_axis * normal).sum(-1, keepdim=True)
    dot = (axis * normal).sum(-1, keepdim=True)
    return p_amp * hemisphere_integral(p_sharp, dot_p) - amplitude * COS_OFFSET * hemisphere_integral(sharpness, dot)


def fibonacci_sphere(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(n, 3) nearly uniform unit vectors on the sphere (spherical Fibonacci lattice; +y from 1 to -1)."""
    i = torch.arange(n, device=device, dtype=torch.float64)
    y = 1.0 - 2.0 * (i + 0.5) / n
    r = torch.sqrt((1.0 - y * y).clamp(min=0.0))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))  # golden angle
    return torch.stack([r * torch.cos(phi), y, r * torch.sin(phi)], -1).to(dtype)


# ----------------------------------------------------------------------------------------------
# equirectangular maps (Mitsuba 3's convention in the map's local frame)


def _rotation(to_world: Tensor | None, like: Tensor) -> Tensor:
    if to_world is None:
        return torch.eye(3, dtype=like.dtype, device=like.device)
    return torch.as_tensor(to_world, dtype=like.dtype, device=like.device)[:3, :3]


def equirect_directions(height: int, width: int, to_world: Tensor | None = None, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(H, W, 3) world unit directions of the pixel centres of an equirectangular map.

    Local: theta = pi (row + 0.5) / H from +y, phi = 2 pi (col + 0.5) / W,
    d = (sin t sin p, cos t, -sin t cos p) (so u = atan2(x, -z) / 2 pi); then ``to_world`` (3x3 or 4x4).
    """
    theta = math.pi * (torch.arange(height, device=device, dtype=torch.float64) + 0.5) / height
    phi = 2.0 * math.pi * (torch.arange(width, device=device, dtype=torch.float64) + 0.5) / width
    st, ct = torch.sin(theta)[:, None], torch.cos(theta)[:, None]
    local = torch.stack(torch.broadcast_tensors(st * torch.sin(phi)[None], ct.expand(height, width), -st * torch.cos(phi)[None]), -1)
    rot = _rotation(to_world, local)
    return (local @ rot.T).to(dtype)


def direction_to_equirect(directions: Tensor, height: int, width: int, to_world: Tensor | None = None) -> Tensor:
    """World unit directions (..., 3) -> continuous pixel positions (..., 2) as (column, row), centres at +0.5."""
    rot = _rotation(to_world, directions)
    local = directions @ rot  # inverse of a rotation is its transpose
    u = torch.remainder(torch.atan2(local[..., 0], -local[..., 2]) / (2.0 * math.pi), 1.0)
    v = torch.arccos(local[..., 1].clamp(-1.0, 1.0)) / math.pi
    return torch.stack([u * width, v * height], -1)


def equirect_solid_angles(height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(H, 1) solid angle of each pixel of a row (steradians): sin(theta) (pi / H) (2 pi / W); sums to ~4 pi."""
    theta = math.pi * (torch.arange(height, device=device, dtype=torch.float64) + 0.5) / height
    return (torch.sin(theta) * (math.pi / height) * (2.0 * math.pi / width))[:, None].to(dtype)


@dataclass
class SGLight:
    """An environment light of K SGs in world space: axis (K, 3) unit, sharpness (K, 1), amplitude (K, 3)
    linear RGB radiance."""

    axis: Tensor
    sharpness: Tensor
    amplitude: Tensor

    def radiance(self, directions: Tensor) -> Tensor:
        """Radiance (N, 3) arriving from unit world ``directions`` (N, 3)."""
        return evaluate_mixture(directions, self.axis, self.sharpness, self.amplitude)

    def to_equirect(self, height: int, width: int | None = None, to_world: Tensor | None = None) -> Tensor:
        """(H, W, 3) equirectangular rendering of the light (W = 2H by default)."""
        width = 2 * height if width is None else width
        d = equirect_directions(height, width, to_world, device=self.axis.device, dtype=self.axis.dtype)
        return self.radiance(d.reshape(-1, 3)).reshape(height, width, -1)

    def to_dict(self) -> dict:
        """Plain lists (JSON): {"lobes": [{"axis", "sharpness", "amplitude"}], "convention"}."""
        lobes = [
            {"axis": a, "sharpness": s[0], "amplitude": m}
            for a, s, m in zip(self.axis.tolist(), self.sharpness.tolist(), self.amplitude.tolist())
        ]
        return {"convention": "G(v) = amplitude * exp(sharpness * (dot(v, axis) - 1)), world axes, linear RGB radiance", "lobes": lobes}

    @staticmethod
    def from_dict(data: dict, device: torch.device | str | None = None) -> "SGLight":
        lobes = data["lobes"]
        axis = torch.tensor([lobe["axis"] for lobe in lobes], dtype=torch.float32, device=device)
        sharp = torch.tensor([[lobe["sharpness"]] for lobe in lobes], dtype=torch.float32, device=device)
        amp = torch.tensor([lobe["amplitude"] for lobe in lobes], dtype=torch.float32, device=device)
        return SGLight(F.normalize(axis, dim=-1), sharp, amp)

    def to(self, device: torch.device | str) -> "SGLight":
        return SGLight(self.axis.to(device), self.sharpness.to(device), self.amplitude.to(device))


def default_sharpness(lobes: int) -> float:
    """A sharpness at which K Fibonacci lobes overlap like neighbours: e^-1 at the mean lobe spacing."""
    spacing = math.sqrt(4.0 * math.pi / max(lobes, 1))
    return 1.0 / max(1.0 - math.cos(spacing), 1e-6)


def downsample_equirect(image: Tensor, max_height: int) -> Tensor:
    """Area-average an (H, W, C) map by an integer factor until H <= max_height."""
    h = image.shape[0]
    factor = 1
    while h // factor > max_height and h % (factor * 2) == 0 and image.shape[1] % (factor * 2) == 0:
        factor *= 2
    if factor == 1:
        return image
    return F.avg_pool2d(image.permute(2, 0, 1)[None], factor)[0].permute(1, 2, 0)


def fit_envmap(
    image: Tensor,
    lobes: int = 128,
    steps: int = 500,
    to_world: Tensor | None = None,
    max_height: int = 32,
    lr: float = 0.05,
) -> tuple[SGLight, float]:
    """Fit K SGs to an equirectangular HDR map (H, W, C) by gradient descent (note 3).

    Minimises sum_pixels omega_p |L_sg(d_p) - L_map(d_p)|^2 (omega_p: pixel solid angle). The map is
    area-averaged to at most ``max_height`` rows first. Returns the light (world axes, through
    ``to_world``) and the solid-angle-weighted relative L2 error ||L_sg - L||_w / ||L||_w on that grid.
    """
    if image.ndim != 3:
        raise ValueError(f"fit_envmap: expected an (H, W, C) map, got shape {tuple(image.shape)}")
    target = downsample_equirect(image.float(), max_height)
    h, w, c = target.shape
    dev = target.device
    dirs = equirect_directions(h, w, to_world, device=dev).reshape(-1, 3)
    weight = equirect_solid_angles(h, w, device=dev).expand(h, w).reshape(-1, 1)
    target = target.reshape(-1, c)
    # --- initial lobes: Fibonacci axes, overlapping sharpness, least-squares amplitudes (clamped >= 0)
    axis0 = fibonacci_sphere(lobes, device=dev)
    sharp0 = torch.full((lobes, 1), default_sharpness(lobes), device=dev)
    basis = torch.exp(sharp0.T * (dirs @ axis0.T - 1.0))  # (N, K)
    sw = weight.sqrt()
    amp0 = torch.linalg.lstsq((basis * sw).double(), (target * sw).double()).solution.float().clamp(min=1e-4)
    raw_axis = axis0.clone().requires_grad_(True)
    log_sharp = sharp0.log().requires_grad_(True)
    log_amp = amp0.log().requires_grad_(True)
    opt = torch.optim.Adam([raw_axis, log_sharp, log_amp], lr=lr)
    norm = (weight * target.square()).sum().clamp(min=1e-20)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        pred = evaluate_mixture(dirs, F.normalize(raw_axis, dim=-1), log_sharp.exp(), log_amp.exp())
        loss = (weight * (pred - target).square()).sum() / norm
        loss.backward()
        opt.step()
    with torch.no_grad():
        light = SGLight(F.normalize(raw_axis, dim=-1).detach(), log_sharp.exp().detach(), log_amp.exp().detach())
        pred = light.radiance(dirs)
        rel = float(((weight * (pred - target).square()).sum() / norm).sqrt())
    return light, rel
