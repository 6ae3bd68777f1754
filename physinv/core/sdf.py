"""Signed-distance surfaces: sphere tracing inside a bounding sphere, IDR's differentiable hit point,
normals, the eikonal loss and IDR's mask loss.

``sdf_fn(x) -> f``: positions (N, 3) -> signed distances (N,) (scene units, negative inside).
Rays are ``rays_o`` (N, 3) and unit ``rays_d`` (N, 3); ``t`` is the distance along the ray.

Pipeline (IDR, Yariv et al. 2020, as PhySG uses it):

1. ``sphere_trace`` (no gradient): march from the bounding sphere's entry point forward and from its
   exit point backward (t += f, t -= f) until |f| < threshold; rays whose two ends did not meet are
   sampled uniformly between the two ends, the first sign change (outside -> inside) is bracketed and
   refined by secant steps. Rays with no sign change miss; for them the sample of minimum f is kept
   (the mask loss pushes that value below zero where the object's mask says "object").
2. ``surface_points``: the hit point as a function of the SDF's parameters theta by implicit
   differentiation: f(x(theta); theta) = 0 along the ray gives
   x(theta) = x0 - d f(x0; theta) / (grad_x f(x0) . d)  with x0 and the denominator detached,
   exact in value (f(x0) ~ 0) and in first derivative at theta0.
3. ``sdf_normals``: n = grad f / |grad f| (with ``create_graph`` so the loss trains through it).

Deviations (tests in ``tests/core/test_sdf.py``):

1. Rays that miss the bounding sphere take, for the mask loss, the ray's point closest to the
   sphere's centre (IDR samples them like the rest); their minimum-SDF point lies near it.
2. The minimum-SDF point of a missing ray is searched on the same uniform samples (``n_samples``)
   as the secant bracket, between the sphere's entry and exit (IDR: the same).
3. Where the forward march overshot into the object (an SDF steeper than a distance, early in a
   fit), the bracket is searched between the sphere's entry and the marched point instead of from
   it; IDR's samples start at the marched point, where that ray counts as a miss (a hole in the
   render inside the mask: 24 of a fitted PhySG's 93 missed mask pixels on the relight scene).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

SdfFn = Callable[[Tensor], Tensor]


def ray_sphere(rays_o: Tensor, rays_d: Tensor, radius: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances (N,) of unit rays through the sphere |x| = radius, and a (N,) bool of
    rays that cross it (entry clamped at 0 for origins inside)."""
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - radius * radius
    disc = b * b - c
    crosses = disc > 0
    root = torch.sqrt(disc.clamp(min=0.0))
    near, far = (-b - root).clamp(min=0.0), -b + root
    return near, far, crosses & (far > 0)


@torch.no_grad()
def sphere_trace(
    sdf_fn: SdfFn,
    rays_o: Tensor,
    rays_d: Tensor,
    radius: float = 1.0,
    max_steps: int = 10,
    threshold: float = 5e-5,
    n_samples: int = 100,
    secant_steps: int = 8,
) -> dict[str, Tensor]:
    """Find each ray's first zero of the SDF inside the bounding sphere (no gradient; see module doc).

    Returns ``t`` (N,) hit distance (for misses: the distance of the minimum-SDF sample), ``hit`` (N,)
    bool, ``min_sdf_t`` (N,) distance of the minimum-SDF point for every ray (= ``t`` on hits).
    """
    n = rays_o.shape[0]
    near, far, crosses = ray_sphere(rays_o, rays_d, radius)
    t_front, t_back = near.clone(), far.clone()
    active_f, active_b = crosses.clone(), crosses.clone()
    f_front = torch.full((n,), float("inf"), device=rays_o.device, dtype=rays_o.dtype)
    for _ in range(max_steps):
        if not (active_f.any() or active_b.any()):
            break
        if active_f.any():
            idx = active_f.nonzero().squeeze(-1)
            f = sdf_fn(rays_o[idx] + t_front[idx, None] * rays_d[idx])
            f_front[idx] = f
            done = f.abs() < threshold
            t_front[idx] = torch.where(done, t_front[idx], t_front[idx] + f)
            active_f[idx] = ~done & (t_front[idx] < t_back[idx])
        if active_b.any():
            idx = active_b.nonzero().squeeze(-1)
            f = sdf_fn(rays_o[idx] + t_back[idx, None] * rays_d[idx])
            done = f.abs() < threshold
            t_back[idx] = torch.where(done, t_back[idx], t_back[idx] - f)
            active_b[idx] = ~done & (t_front[idx] < t_back[idx])
    converged = crosses & (f_front.abs() < threshold) & (t_front < far)
    t = torch.where(converged, t_front, near)
    hit = converged.clone()
    min_sdf_t = torch.where(crosses, t, -(rays_o * rays_d).sum(-1))  # note 1: closest point to the centre

    # --- unconverged crossing rays: uniform samples between the two marched ends, first sign change, secant
    todo = (crosses & ~converged).nonzero().squeeze(-1)
    if todo.numel():
        lo, hi = t_front[todo].clamp(max=far[todo]), t_back[todo].clamp(min=near[todo])
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        steps = torch.linspace(0.0, 1.0, n_samples, device=rays_o.device, dtype=rays_o.dtype)
        ts = lo[:, None] + (hi - lo)[:, None] * steps[None]  # (M, S)
        pts = rays_o[todo, None] + ts[..., None] * rays_d[todo, None]
        fs = sdf_fn(pts.reshape(-1, 3)).reshape(ts.shape)
        over = fs[:, 0] < 0
        if over.any():  # note 3: the forward march overshot into the object: the crossing lies before lo
            r = over.nonzero().squeeze(-1)
            ts[r] = near[todo[r], None] + (lo[r] - near[todo[r]])[:, None] * steps[None]
            fs[r] = sdf_fn((rays_o[todo[r], None] + ts[r, :, None] * rays_d[todo[r], None]).reshape(-1, 3)).reshape(len(r), -1)
        inside = fs < 0
        # first negative sample: argmax of (inside * decreasing weights)
        first = torch.argmax(inside.to(ts.dtype) * torch.arange(n_samples, 0, -1, device=ts.device, dtype=ts.dtype), -1)
        has = inside.any(-1) & (first > 0)
        rows = torch.arange(len(todo), device=ts.device)
        t_lo, t_hi = ts[rows, (first - 1).clamp(min=0)], ts[rows, first]
        f_lo, f_hi = fs[rows, (first - 1).clamp(min=0)], fs[rows, first]
        for _ in range(secant_steps):
            t_mid = t_lo - f_lo * (t_hi - t_lo) / (f_hi - f_lo).where((f_hi - f_lo).abs() > 1e-12, torch.full_like(f_hi, -1e-12))
            f_mid = sdf_fn(rays_o[todo] + t_mid[:, None] * rays_d[todo])
            neg = f_mid < 0
            t_hi, f_hi = torch.where(neg, t_mid, t_hi), torch.where(neg, f_mid, f_hi)
            t_lo, f_lo = torch.where(neg, t_lo, t_mid), torch.where(neg, f_lo, f_mid)
        t_secant = t_lo - f_lo * (t_hi - t_lo) / (f_hi - f_lo).where((f_hi - f_lo).abs() > 1e-12, torch.full_like(f_hi, -1e-12))
        t_min = ts[rows, fs.argmin(-1)]
        miss = (~has).nonzero().squeeze(-1)
        if miss.numel():  # note 2: the minimum-SDF point of a miss, on samples across the whole sphere
            rm = todo[miss]
            ts_m = near[rm, None] + (far - near)[rm, None] * steps[None]
            fs_m = sdf_fn((rays_o[rm, None] + ts_m[..., None] * rays_d[rm, None]).reshape(-1, 3)).reshape(ts_m.shape)
            t_min[miss] = ts_m[torch.arange(len(rm), device=ts.device), fs_m.argmin(-1)]
        t[todo] = torch.where(has, t_secant, t_min)
        hit[todo] = has
        min_sdf_t[todo] = torch.where(has, t_secant, t_min)
    # misses of crossing rays that converged nowhere and were not sampled cannot exist; misses of
    # non-crossing rays keep the closest point (note 1)
    t = torch.where(crosses, t, min_sdf_t)
    return {"t": t, "hit": hit, "min_sdf_t": min_sdf_t}


def surface_points(sdf_fn: SdfFn, rays_o: Tensor, rays_d: Tensor, t: Tensor) -> Tensor:
    """Hit points (N, 3) differentiable w.r.t. the SDF's parameters by implicit differentiation (IDR):
    x = x0 - d f(x0; theta) / (grad f(x0) . d), with x0 = o + t d and the denominator detached."""
    x0 = (rays_o + t[:, None] * rays_d).detach()
    with torch.enable_grad():
        xg = x0.clone().requires_grad_(True)
        grad = torch.autograd.grad(sdf_fn(xg).sum(), xg)[0]
    slope = (grad * rays_d).sum(-1).detach()
    slope = torch.where(slope.abs() < 1e-6, torch.full_like(slope, -1e-6), slope)  # grazing: keep finite
    return x0 - (sdf_fn(x0) / slope)[:, None] * rays_d


def sdf_gradient(sdf_fn: SdfFn, x: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor]:
    """SDF values (N,) and spatial gradients (N, 3) at x (N, 3); with ``create_graph`` a loss on the
    gradient (eikonal, shading through normals) trains the SDF's parameters."""
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        f = sdf_fn(x)
        grad = torch.autograd.grad(f.sum(), x, create_graph=create_graph)[0]
    return f, grad


def sdf_normals(sdf_fn: SdfFn, x: Tensor, create_graph: bool = True) -> Tensor:
    """Unit outward normals (N, 3) = grad f / |grad f| at x (N, 3)."""
    return F.normalize(sdf_gradient(sdf_fn, x, create_graph)[1], dim=-1)


def eikonal_loss(gradients: Tensor) -> Tensor:
    """mean (|grad f| - 1)^2 over gradients (N, 3): keeps f a signed distance."""
    return (gradients.norm(dim=-1) - 1.0).square().mean()


def normal_smoothness_loss(normals: Tensor, valid: Tensor) -> Tensor:
    """PhySG's normal smoothness: the variance of the normals inside each pixel patch, averaged over
    the patches whose rays all hit the object inside its mask and over the 3 components.
    normals (P, K, 3) for P patches of K pixels; valid (P,) bool. Zero when no patch is valid."""
    if not valid.any():
        return normals.sum() * 0.0
    return normals[valid].var(dim=1).mean()


def mask_loss(min_sdf: Tensor, object_mask: Tensor, hit: Tensor, alpha: float) -> Tensor:
    """IDR's mask loss over the rays where (hit and object) is false, normalised by the ray count:
    (1 / alpha) * BCE(sigmoid(-alpha * min_sdf), mask). min_sdf (N,) at each ray's minimum-SDF point;
    object_mask (N,) in [0, 1] (1 = object); hit (N,) bool from the tracer."""
    sel = ~(hit & (object_mask > 0.5))
    if not sel.any():
        return min_sdf.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(-alpha * min_sdf[sel], object_mask[sel].to(min_sdf.dtype), reduction="sum")
    return bce / (alpha * min_sdf.shape[0])


def mask_alpha(step: int, total_steps: int, alpha0: float = 50.0, factor: float = 2.0, milestones: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5, 0.625)) -> float:
    """IDR's sharpening schedule of the mask loss's alpha: alpha0 * factor^(milestones passed), with
    milestones as fractions of the run (IDR: epochs 250, 500, ..., 1250 of 2000)."""
    passed = sum(step >= m * total_steps for m in milestones)
    return alpha0 * factor**passed
