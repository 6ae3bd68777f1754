"""Emission–absorption volume rendering by quadrature (NeRF eq. 3, Max 1995).

A ray is cut into intervals ``[t_i, t_i + delta_i]`` of constant density ``sigma_i`` (1/metre):

    alpha_i = 1 - exp(-sigma_i * delta_i)            opacity of interval i
    T_i     = prod_{j<i} (1 - alpha_j)                transmittance up to interval i (exclusive)
            = exp(-sum_{j<i} sigma_j * delta_j)
    w_i     = T_i * alpha_i                           probability the ray terminates in interval i
    C       = sum_i w_i c_i  (+ (1 - sum_i w_i) * background)

``c_i`` can be any per-sample feature: colour, a distance (expected depth), class logits, normals.

Two layouts are supported with the same maths:

* padded: samples as a dense ``(R, S)`` grid, every ray the same number of samples;
* packed: the samples of all rays concatenated ``(M,)`` with ``ray_indices (M,)`` (sorted,
  non-decreasing) naming the ray of each sample, no padding (the layout of nerfacc). Per-ray
  reductions are scatter sums (``index_add``) and the per-ray exclusive scan is a global cumulative
  sum minus the value at each ray's first sample, taken in float64 so that a long concatenation
  does not eat the precision of later rays.

The field protocol (nerfacc-style) that every pipeline renders through:

* a sampler (``physinv.core.sampling``) turns rays into :class:`RaySamples`, optionally asking a
  ``sigma_fn(t_starts, t_ends, ray_indices) -> sigma (M,)`` where the field is;
* :func:`render_samples` calls ``fields_fn(t_starts, t_ends, ray_indices) -> dict`` once, takes
  ``sigma`` from it and composites *every other entry* with the same weights, so a new per-sample
  head (normals, albedo, instance logits, ...) never means editing a renderer;
* :func:`composite_samples` composites features with weights computed elsewhere (a second field
  riding on a frozen field's samples and weights, as Instance-NeRF does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

# ----------------------------------------------------------------------------------------------
# padded (R, S)


def alpha_from_density(sigma: Tensor, delta: Tensor) -> Tensor:
    """Interval opacity ``1 - exp(-sigma * delta)``; sigma (1/m) and delta (m) broadcast, any shape."""
    return -torch.expm1(-sigma * delta)


def exclusive_cumprod(x: Tensor, dim: int = -1) -> Tensor:
    """``[1, x_0, x_0 x_1, ...]`` along ``dim`` (the product of all *earlier* entries)."""
    ones = torch.ones_like(x.narrow(dim, 0, 1))
    return torch.cumprod(torch.cat([ones, x.narrow(dim, 0, x.shape[dim] - 1)], dim), dim)


def transmittance_from_alpha(alpha: Tensor) -> Tensor:
    """Transmittance before each sample, ``T_i = prod_{j<i} (1 - alpha_j)``; alpha (..., S)."""
    return exclusive_cumprod(1.0 - alpha, dim=-1)


def weights_from_alpha(alpha: Tensor) -> tuple[Tensor, Tensor]:
    """alpha (..., S) -> (weights (..., S), transmittance (..., S)) with weights = T * alpha."""
    trans = transmittance_from_alpha(alpha)
    return trans * alpha, trans


def weights_from_density(sigma: Tensor, delta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Padded quadrature weights.

    sigma: (..., S) density (1/m), delta: (..., S) interval lengths (m).
    Returns weights (..., S), transmittance (..., S) before each interval and alpha (..., S).
    The transmittance is ``exp(-exclusive cumsum(sigma * delta))``, which equals the exclusive
    cumprod of ``1 - alpha`` and is better conditioned when alpha is close to 1.
    """
    tau = sigma * delta  # optical thickness of each interval
    alpha = -torch.expm1(-tau)
    optical_depth = torch.cumsum(tau, dim=-1) - tau  # exclusive
    trans = torch.exp(-optical_depth)
    return trans * alpha, trans, alpha


def composite(weights: Tensor, values: Tensor) -> Tensor:
    """Weighted sum along samples: weights (..., S), values (..., S, C) -> (..., C) or (..., S) -> (...)."""
    if values.dim() == weights.dim():
        return (weights * values).sum(-1)
    return torch.einsum("...s,...sc->...c", weights, values)


def _add_background(out: dict[str, Tensor], background: Tensor | None) -> dict[str, Tensor]:
    """Blend ``background`` (C,) or (R, C) into ``out["rgb"]`` (R, C) with weight ``1 - opacity``."""
    if background is not None and "rgb" in out:
        out["rgb"] = out["rgb"] + (1.0 - out["opacity"]).unsqueeze(-1) * background
    return out


def render_padded(
    sigma: Tensor,
    delta: Tensor,
    t_mid: Tensor,
    features: dict[str, Tensor] | None = None,
    background: Tensor | None = None,
) -> dict[str, Tensor]:
    """Volume-render padded samples.

    sigma, delta, t_mid: (R, S) density (1/m), interval length (m), sample distance (m).
    features: name -> (R, S, C) or (R, S) per-sample features to composite (colour, logits, ...).
    background: (C,) or (R, C), added to the feature named ``rgb`` with weight ``1 - opacity``.
    Returns ``weights`` (R, S), ``transmittance`` (R, S), ``opacity`` (R,) accumulated alpha,
    ``depth`` (R,) expected termination distance ``sum w t`` (not normalised: a ray that leaves
    the volume contributes 0), and every feature composited (R, C).
    """
    weights, trans, _ = weights_from_density(sigma, delta)
    out = {"weights": weights, "transmittance": trans, "opacity": weights.sum(-1), "depth": (weights * t_mid).sum(-1)}
    for name, value in (features or {}).items():
        out[name] = composite(weights, value)
    return _add_background(out, background)


# ----------------------------------------------------------------------------------------------
# packed (M,) with ray_indices


def segment_sum(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Per-ray sum of packed values: values (M, ...) -> (n_rays, ...); ray_indices (M,) int64."""
    out = values.new_zeros((n_rays,) + values.shape[1:])
    return out.index_add(0, ray_indices, values)


def segment_starts(ray_indices: Tensor, n_rays: int) -> tuple[Tensor, Tensor]:
    """Offsets and counts of each ray's samples in a sorted packed array: (n_rays,), (n_rays,) int64.

    Rays without samples get count 0 (their offset is where they would start).
    """
    counts = torch.bincount(ray_indices, minlength=n_rays)
    offsets = torch.cumsum(counts, 0) - counts
    return offsets, counts


def exclusive_segment_cumsum(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Exclusive cumulative sum within each ray of packed values (M,), in float64, returned as float64.

    ray_indices must be sorted (samples of one ray contiguous).
    """
    v64 = values.double()
    inclusive = torch.cumsum(v64, 0)
    exclusive = inclusive - v64
    if values.numel() == 0:
        return exclusive
    offsets, _ = segment_starts(ray_indices, n_rays)
    # value of the global exclusive scan at each ray's first sample
    first = exclusive.index_select(0, offsets.clamp(max=values.numel() - 1))
    return exclusive - first.index_select(0, ray_indices)


def weights_from_density_packed(sigma: Tensor, delta: Tensor, ray_indices: Tensor, n_rays: int) -> tuple[Tensor, Tensor, Tensor]:
    """Packed quadrature weights: sigma, delta, ray_indices (M,) -> weights, transmittance, alpha (M,)."""
    tau = sigma * delta
    alpha = -torch.expm1(-tau)
    optical_depth = exclusive_segment_cumsum(tau, ray_indices, n_rays).to(tau.dtype)
    trans = torch.exp(-optical_depth)
    return trans * alpha, trans, alpha


def render_packed(
    sigma: Tensor,
    delta: Tensor,
    t_mid: Tensor,
    ray_indices: Tensor,
    n_rays: int,
    features: dict[str, Tensor] | None = None,
    background: Tensor | None = None,
) -> dict[str, Tensor]:
    """Volume-render packed samples; the packed twin of :func:`render_padded`.

    sigma, delta, t_mid, ray_indices: (M,); features: name -> (M, C) or (M,).
    Returns ``weights`` (M,), ``transmittance`` (M,), ``opacity`` (n_rays,), ``depth`` (n_rays,)
    and each feature (n_rays, C); rays without samples get opacity 0 and the background.
    """
    weights, trans, _ = weights_from_density_packed(sigma, delta, ray_indices, n_rays)
    out = {
        "weights": weights,
        "transmittance": trans,
        "opacity": segment_sum(weights, ray_indices, n_rays),
        "depth": segment_sum(weights * t_mid, ray_indices, n_rays),
    }
    out.update(_composite_packed(weights, ray_indices, n_rays, features or {}))
    return _add_background(out, background)


def _composite_packed(weights: Tensor, ray_indices: Tensor, n_rays: int, features: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-ray weighted sums of packed features (M, C) or (M,) with weights (M,)."""
    return {name: segment_sum((weights if v.dim() == 1 else weights.unsqueeze(-1)) * v, ray_indices, n_rays) for name, v in features.items()}


def pack_padded(values: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(R, S, ...) padded samples -> packed (M, ...) and ray_indices (M,), keeping ``mask`` (R, S) entries."""
    R, S = values.shape[:2]
    if mask is None:
        mask = torch.ones(R, S, dtype=torch.bool, device=values.device)
    ray_indices = torch.arange(R, device=values.device).unsqueeze(1).expand(R, S)[mask]
    return values[mask], ray_indices


# ----------------------------------------------------------------------------------------------
# the field protocol: packed samples, a fields function, one compositor


@dataclass
class RaySamples:
    """Packed samples along ``n_rays`` rays (nerfacc's layout).

    ``t_starts``, ``t_ends``, ``ray_indices``: (M,), sorted by ray and, within a ray, by midpoint.
    Each sample is a quadrature interval: the field is evaluated at its midpoint and its length is
    the ``delta`` of the quadrature. Samplers whose points are not interval midpoints (NeRF's
    stratified and importance samples t_i with ``delta_i = t_{i+1} - t_i``, eq. 3) centre the interval
    on the point, so intervals of one ray may overlap; only midpoints and lengths enter the maths.
    ``per_ray``: when every ray has exactly that many samples (samples of ray r at
    ``r * per_ray ...``), renderers may use the padded (R, S) fast path; None otherwise.
    """

    ray_indices: Tensor
    t_starts: Tensor
    t_ends: Tensor
    n_rays: int
    per_ray: int | None = None

    @property
    def t_mids(self) -> Tensor:
        """(M,) distances of the evaluation points along the rays."""
        return 0.5 * (self.t_starts + self.t_ends)

    @property
    def deltas(self) -> Tensor:
        """(M,) quadrature interval lengths."""
        return self.t_ends - self.t_starts

    def __len__(self) -> int:
        return self.ray_indices.shape[0]

    def points(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """World positions (M, 3) of the samples on rays origins, dirs (n_rays, 3)."""
        return origins[self.ray_indices] + dirs[self.ray_indices] * self.t_mids.unsqueeze(-1)

    def select(self, keep: Tensor) -> "RaySamples":
        """The samples where ``keep`` (M,) bool is true (the regular layout is lost)."""
        return RaySamples(self.ray_indices[keep], self.t_starts[keep], self.t_ends[keep], self.n_rays)


FieldsFn = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]

# outputs of a renderer that are per sample (M,) or packed samples, not per ray
PER_SAMPLE_KEYS = ("samples", "weights", "transmittance")


def composite_samples(weights: Tensor, samples: RaySamples, features: dict[str, Tensor]) -> dict[str, Tensor]:
    """Composite every per-sample feature (M, C) or (M,) with ``weights`` (M,): name -> (n_rays, C) / (n_rays,)."""
    return _composite_packed(weights, samples.ray_indices, samples.n_rays, features)


def render_samples(samples: RaySamples, fields_fn: FieldsFn, background: Tensor | None = None) -> dict[str, Tensor]:
    """Volume-render packed samples with any set of per-sample features.

    ``fields_fn(t_starts, t_ends, ray_indices)`` returns a dict with ``sigma`` (M,) (1/scene unit)
    and any other per-sample features (M, C) or (M,); each of those is composited (n_rays, C).
    background: (C,) or (n_rays, C), blended into ``rgb`` with weight ``1 - opacity``.
    Returns per ray ``opacity``, ``depth`` (expected distance, background adds 0) and every
    feature; per sample ``weights`` and ``transmittance`` (M,).
    """
    fields = dict(fields_fn(samples.t_starts, samples.t_ends, samples.ray_indices))
    sigma = fields.pop("sigma")
    S = samples.per_ray
    if S is not None:  # regular layout: the padded scan (same maths, no float64 segment scan)
        R = samples.n_rays
        padded = {k: v.view(R, S, *v.shape[1:]) for k, v in fields.items()}
        out = render_padded(sigma.view(R, S), samples.deltas.view(R, S), samples.t_mids.view(R, S), padded, background)
        out["weights"], out["transmittance"] = out["weights"].reshape(-1), out["transmittance"].reshape(-1)
        return out
    return render_packed(sigma, samples.deltas, samples.t_mids, samples.ray_indices, samples.n_rays, fields, background)
