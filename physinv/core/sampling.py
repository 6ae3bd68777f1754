"""Where to put samples along rays: ray–box clipping, stratified bins, NeRF's hierarchical
inverse-CDF sampling, and an occupancy grid that skips empty space (instant-ngp, nerfacc).

Distances ``t`` are in scene units along unit-length ray directions. The samplers of the field
protocol (:class:`UniformSampler`, :class:`OccupancyGridSampler`, :func:`importance_samples`) return
packed :class:`~physinv.core.volume.RaySamples`; those that look at the field take a
``sigma_fn(t_starts, t_ends, ray_indices) -> sigma (M,)``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from physinv.core.volume import RaySamples, exclusive_segment_cumsum, segment_starts

SigmaFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def ray_aabb_intersect(origins: Tensor, dirs: Tensor, aabb: Tensor, near_min: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test of rays against an axis-aligned box.

    origins, dirs: (R, 3); aabb: (2, 3) min and max corners.
    Returns t_near (R,), t_far (R,) (t_near clamped to ``near_min``, so a camera inside the box
    starts at its own position) and hit (R,) bool (the ray meets the box in front of ``near_min``).
    """
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12) * torch.where(dirs < 0, -1.0, 1.0), dirs)
    inv = 1.0 / safe
    t0 = (aabb[0] - origins) * inv
    t1 = (aabb[1] - origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp(min=near_min)
    t_far = torch.maximum(t0, t1).amin(-1)
    hit = t_far > t_near
    return t_near, t_far, hit


def stratified_samples(near: Tensor, far: Tensor, n_samples: int, perturb: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """NeRF's stratified sampling: one sample drawn uniformly in each of ``n_samples`` equal bins.

    near, far: (R,) distances. Returns t (R, n_samples), sorted; with ``perturb=False`` the bin
    centres (deterministic, for evaluation).
    """
    R = near.shape[0]
    u = torch.arange(n_samples, device=near.device, dtype=near.dtype)
    if perturb:
        jitter = torch.rand(R, n_samples, generator=generator, device=generator.device if generator is not None else near.device, dtype=near.dtype)
        u = u + jitter.to(near.device)
    else:
        u = (u + 0.5).expand(R, n_samples)
    return near.unsqueeze(-1) + (far - near).unsqueeze(-1) * (u / n_samples)


def intervals_from_samples(t: Tensor, far: Tensor) -> Tensor:
    """Quadrature lengths for samples t (R, S): ``delta_i = t_{i+1} - t_i`` and ``far - t_S`` for the last.

    (NeRF uses 1e10 for the last interval, which makes every ray opaque; ending at ``far`` keeps the
    background visible through empty space.)
    """
    return torch.cat([t[:, 1:] - t[:, :-1], (far.unsqueeze(-1) - t[:, -1:]).clamp(min=0.0)], -1)


def sample_pdf(bins: Tensor, weights: Tensor, n_samples: int, deterministic: bool = False, generator: torch.Generator | None = None, eps: float = 1e-5) -> Tensor:
    """Inverse-transform sampling of a piecewise-constant pdf (NeRF's ``sample_pdf``).

    bins: (R, B+1) sorted bin edges; weights: (R, B) non-negative bin weights (any scale).
    Returns (R, n_samples) distances distributed with density proportional to ``weights`` in each
    bin (uniform inside a bin). ``deterministic`` uses evenly spaced quantiles instead of uniform
    random ones. The result carries no gradient to ``weights`` or ``bins`` (as in NeRF).
    """
    bins, weights = bins.detach(), weights.detach()
    weights = weights + eps  # no zero-probability bins: keeps the CDF strictly increasing
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # (R, B+1)
    cdf[:, -1] = 1.0
    R = bins.shape[0]
    if deterministic:
        u = torch.linspace(0.0, 1.0, n_samples, device=bins.device, dtype=bins.dtype).expand(R, n_samples).contiguous()
    else:
        u = torch.rand(R, n_samples, generator=generator, device=generator.device if generator is not None else bins.device, dtype=bins.dtype).to(bins.device)
    idx = torch.searchsorted(cdf, u, right=True)
    below = (idx - 1).clamp(min=0, max=cdf.shape[-1] - 1)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    frac = (u - cdf_lo) / denom
    return bin_lo + frac * (bin_hi - bin_lo)


# ----------------------------------------------------------------------------------------------
# uniform marching and the occupancy grid


def march_uniform(t_near: Tensor, t_far: Tensor, step: float, max_samples: int | None = None, jitter: Tensor | None = None) -> dict[str, Tensor]:
    """Packed equal steps of length ``step`` along each ray from t_near to t_far.

    t_near, t_far: (R,); rays with t_far <= t_near get no samples. ``jitter`` (R,) in [0, 1)
    shifts every ray's sample grid (stratified marching); None puts samples at interval centres.
    ``max_samples`` caps the samples per ray.
    Returns packed :class:`RaySamples` (intervals, sorted per ray).
    """
    length = (t_far - t_near).clamp(min=0.0)
    counts = torch.ceil(length / step).long()
    if jitter is not None:  # one more interval: the grid is shifted by jitter * step
        counts = torch.where(length > 0, counts + 1, counts)
    if max_samples is not None:
        counts = counts.clamp(max=max_samples)
    R = t_near.shape[0]
    ray_indices = torch.repeat_interleave(torch.arange(R, device=t_near.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    local = (torch.arange(ray_indices.numel(), device=t_near.device) - offsets[ray_indices]).to(t_near.dtype)
    tn, tf = t_near[ray_indices], t_far[ray_indices]
    if jitter is None:
        t_starts = tn + local * step
        t_ends = torch.minimum(t_starts + step, tf)
    else:
        j = jitter[ray_indices]
        t_starts = torch.maximum(tn + (local - 1.0 + j) * step, tn)
        t_ends = torch.minimum(tn + (local + j) * step, tf)
        keep = t_ends > t_starts
        ray_indices, t_starts, t_ends = ray_indices[keep], t_starts[keep], t_ends[keep]
    return RaySamples(ray_indices, t_starts, t_ends, R)


class OccupancyGrid(nn.Module):
    """A ``res³`` grid over an axis-aligned box that remembers where density has been seen.

    Each cell holds an exponential moving average of the *maximum* density found in it
    (instant-ngp §4: ``d <- max(decay * d, sigma(x))`` at a random point ``x`` of the cell), and a
    cell is occupied when its density exceeds ``min(threshold, mean density)`` — the mean guard of
    instant-ngp keeps some cells alive while the field is still dim. ``threshold`` is a density in
    1/m multiplied by ``step`` when given (``density * step > threshold``, i.e. an opacity per
    marching step, as nerfacc does), else a density.

    One random point per cell sees only part of a cell that a surface cuts, so a cell whose density
    lies in a corner can be missed for many updates; with ``dilate`` (default) the occupied mask is
    grown by one cell (a 3x3x3 max), which keeps such boundary cells alive at little cost.

    Marching (:meth:`sample`) emits packed samples only in occupied cells.
    """

    def __init__(self, aabb: Tensor, resolution: int = 128, decay: float = 0.95, threshold: float = 0.01, step: float | None = None, warmup_steps: int = 256, dilate: bool = True):
        super().__init__()
        self.resolution, self.decay, self.threshold, self.step, self.warmup_steps = int(resolution), float(decay), float(threshold), step, int(warmup_steps)
        self.dilate = bool(dilate)
        self.register_buffer("aabb", aabb.detach().clone().float())
        n = self.resolution**3
        # -1 marks a cell never looked at: it counts as occupied until it has been evaluated once,
        # so partial updates never cull unseen space
        self.register_buffer("density", torch.full((n,), -1.0))
        self.register_buffer("occupied", torch.ones(n, dtype=torch.bool))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    # -- geometry
    def cell_centres(self, cells: Tensor, jitter: Tensor | None = None) -> Tensor:
        """Flat cell indices (K,) -> world points (K, 3) (cell centre, or ``jitter`` (K, 3) in [0, 1) inside it)."""
        r = self.resolution
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], -1).to(self.aabb.dtype)
        frac = (ijk + (0.5 if jitter is None else jitter)) / r
        return self.aabb[0] + frac * (self.aabb[1] - self.aabb[0])

    def cells_of(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """World points (K, 3) -> flat cell indices (K,) and inside-the-box mask (K,)."""
        r = self.resolution
        u = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0) & (u <= 1)).all(-1)
        ijk = (u * r).long().clamp(0, r - 1)
        return ijk[:, 0] * r * r + ijk[:, 1] * r + ijk[:, 2], inside

    def is_occupied(self, points: Tensor) -> Tensor:
        """(K, 3) world points -> (K,) bool: inside the box and in an occupied cell."""
        cells, inside = self.cells_of(points)
        return self.occupied[cells] & inside

    # -- update
    @torch.no_grad()
    def update(self, density_fn, n_cells: int | None = None, generator: torch.Generator | None = None) -> None:
        """One EMA update: evaluate ``density_fn(points (K, 3)) -> (K,)`` at a random point of each chosen cell.

        During the first ``warmup_steps`` updates every cell is visited; afterwards ``n_cells``
        (default: a quarter of the grid) uniformly random cells plus as many occupied ones, as
        instant-ngp does. Unvisited cells decay too; cells never visited stay occupied.
        """
        device = self.density.device
        n_total = self.density.numel()
        if int(self.updates) < self.warmup_steps or (n_cells is not None and n_cells >= n_total):
            cells = torch.arange(n_total, device=device)
        else:
            k = n_cells or n_total // 4
            rand_cells = torch.randint(0, n_total, (k,), device=device)
            occ = self.occupied.nonzero().squeeze(-1)
            if occ.numel() > 0:
                occ = occ[torch.randint(0, occ.numel(), (k,), device=device)]
            cells = torch.cat([rand_cells, occ])
        fresh = torch.full_like(self.density, -1.0)
        for chunk in cells.split(1 << 18):
            pts = self.cell_centres(chunk, torch.rand(chunk.numel(), 3, device=device))
            sigma = density_fn(pts).float().reshape(-1).clamp(min=0.0)
            fresh.scatter_reduce_(0, chunk, sigma, "amax", include_self=True)
        seen = self.density >= 0
        decayed = torch.where(seen, self.density * self.decay, self.density)
        self.density.copy_(torch.maximum(decayed, fresh))  # fresh >= 0 where visited, -1 elsewhere
        self.updates += 1
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the occupied mask from the stored densities (unseen cells stay occupied)."""
        seen = self.density >= 0
        d = self.density * (self.step if self.step is not None else 1.0)
        mean = torch.where(seen, d, 0.0).sum() / seen.sum().clamp(min=1)  # 0 while nothing is seen (stays on the device)
        occ = (d > mean.clamp(max=self.threshold)) | ~seen
        if self.dilate:
            r = self.resolution
            occ = torch.nn.functional.max_pool3d(occ.view(1, 1, r, r, r).float(), 3, stride=1, padding=1).view(-1) > 0
        self.occupied.copy_(occ)

    # -- marching
    def sample(self, origins: Tensor, dirs: Tensor, step: float, perturb: bool = False, max_samples: int | None = None, near_min: float = 0.0) -> RaySamples:
        """Packed marching samples in occupied cells only.

        origins, dirs: (R, 3). Equal steps of ``step`` between the box entry and exit (jittered per
        ray when ``perturb``); a sample is kept when its midpoint lies in an occupied cell.
        """
        t_near, t_far = box_interval(origins, dirs, self.aabb.to(origins.dtype), near_min)
        jitter = torch.rand(origins.shape[0], device=origins.device, dtype=origins.dtype) if perturb else None
        marched = march_uniform(t_near, t_far, step, max_samples=max_samples, jitter=jitter)
        return marched.select(self.is_occupied(marched.points(origins, dirs)))


def grid_step_for(aabb: Tensor, n_steps: int) -> float:
    """Marching step that crosses the box diagonal in ``n_steps`` steps (scene units)."""
    return float(torch.linalg.norm(aabb[1] - aabb[0])) / n_steps


@torch.no_grad()
def cull_occluded(sigma_fn: SigmaFn, samples: RaySamples, eps: float = 1e-4, chunk: int = 16) -> Tensor:
    """Early ray termination for packed samples, in pure PyTorch: keep-mask (M,) of the samples
    whose transmittance is still above ``eps``.

    The march goes ``chunk`` samples per ray at a time (``sigma_fn`` without gradients on the
    alive rays only), so a ray that turns opaque after a few samples costs those few samples plus
    at most ``chunk`` more, not its whole length (what a CUDA marcher does sample by sample).
    """
    ray_indices, t_starts, t_ends, n_rays = samples.ray_indices, samples.t_starts, samples.t_ends, samples.n_rays
    M = ray_indices.numel()
    keep = torch.zeros(M, dtype=torch.bool, device=ray_indices.device)
    if M == 0:
        return keep
    offsets, counts = segment_starts(ray_indices, n_rays)
    local = torch.arange(M, device=ray_indices.device) - offsets[ray_indices]
    depth = torch.zeros(n_rays, dtype=torch.float64, device=ray_indices.device)  # optical depth so far
    alive = counts > 0
    log_eps = -math.log(eps)  # transmittance < eps  <=>  optical depth > -ln eps
    for start in range(0, int(counts.max()), chunk):
        # the samples [start, start + chunk) of every alive ray
        sel = (local >= start) & (local < start + chunk) & alive[ray_indices]
        idx = sel.nonzero().squeeze(-1)
        if idx.numel() == 0:
            break
        r = ray_indices[idx]
        sigma = sigma_fn(t_starts[idx], t_ends[idx], r).reshape(-1)
        tau = (sigma * (t_ends[idx] - t_starts[idx])).double()
        before = depth[r] + exclusive_segment_cumsum(tau, r, n_rays)  # optical depth in front of each sample
        keep[idx] = before < log_eps
        depth = depth.index_add(0, r, tau)
        alive = alive & (depth < log_eps)
    return keep


# ----------------------------------------------------------------------------------------------
# samplers of the field protocol


def centred_intervals(t: Tensor, delta: Tensor) -> RaySamples:
    """Regular packed samples from padded sample points t (R, S) and quadrature lengths delta (R, S):
    intervals centred on each t (see :class:`RaySamples`), ``per_ray = S``."""
    R, S = t.shape
    ray_indices = torch.arange(R, device=t.device).repeat_interleave(S)
    t, half = t.reshape(-1), 0.5 * delta.reshape(-1)
    return RaySamples(ray_indices, t - half, t + half, R, per_ray=S)


def box_interval(origins: Tensor, dirs: Tensor, aabb: Tensor, near_min: float = 0.0) -> tuple[Tensor, Tensor]:
    """Entry and exit distances (R,) of rays in the box (see :func:`ray_aabb_intersect`); a ray that
    misses gets ``far = near``, i.e. nothing to integrate."""
    near, far, hit = ray_aabb_intersect(origins, dirs, aabb, near_min)
    return near, torch.where(hit, far, near)


class UniformSampler(nn.Module):
    """``n_samples`` stratified samples per ray between the box entry and exit, each standing for
    an interval of ``(far - near) / n_samples`` (the ``plain`` method; a ray that misses the box gets
    zero-length intervals). Looks at no field."""

    def __init__(self, aabb: Tensor, n_samples: int):
        super().__init__()
        self.register_buffer("aabb", aabb.detach().clone().float())
        self.n_samples = int(n_samples)

    def forward(self, origins: Tensor, dirs: Tensor, sigma_fn: SigmaFn | None = None, perturb: bool = False) -> RaySamples:
        near, far = box_interval(origins, dirs, self.aabb)
        t = stratified_samples(near, far, self.n_samples, perturb=perturb)
        return centred_intervals(t, ((far - near) / self.n_samples).unsqueeze(-1).expand_as(t))

    def update(self, step: int, density_fn: Callable[[Tensor], Tensor]) -> None:
        """Nothing to learn about the field."""


class OccupancyGridSampler(nn.Module):
    """Marching at ``step`` through the occupied cells of an :class:`OccupancyGrid` (the ``ngp``
    method), with early ray termination through ``sigma_fn`` when ``early_stop_eps > 0``.

    The termination pass costs a density evaluation per sample it visits; while the field is still
    transparent (early training) it removes little, so after a training call that keeps more than
    80 % of the samples it is skipped for the next 8 training calls (``cull_skip``, a buffer, so
    a resumed run makes the same choices).
    """

    def __init__(self, grid: OccupancyGrid, step: float, early_stop_eps: float = 1e-4, update_every: int = 16, update_fraction: float = 0.25):
        super().__init__()
        self.grid, self.step, self.early_stop_eps = grid, float(step), float(early_stop_eps)
        self.update_every, self.update_fraction = int(update_every), float(update_fraction)
        self.register_buffer("cull_skip", torch.zeros((), dtype=torch.long))

    def forward(self, origins: Tensor, dirs: Tensor, sigma_fn: SigmaFn | None = None, perturb: bool = False) -> RaySamples:
        samples = self.grid.sample(origins, dirs, self.step, perturb=perturb)
        if sigma_fn is None or self.early_stop_eps <= 0 or len(samples) == 0:
            return samples
        if self.training and int(self.cull_skip) > 0:
            self.cull_skip -= 1
            return samples
        keep = cull_occluded(sigma_fn, samples, eps=self.early_stop_eps)
        if self.training and float(keep.float().mean()) > 0.8:
            self.cull_skip.fill_(8)
        return samples.select(keep)

    @torch.no_grad()
    def update(self, step: int, density_fn: Callable[[Tensor], Tensor]) -> None:
        """EMA update of the grid every ``update_every`` training steps.

        The first update waits for step ``update_every``: at step 0 the field is still its uniform
        initial fog and an update would teach the grid nothing."""
        if step == 0 or step % self.update_every != 0:
            return
        self.grid.update(density_fn, n_cells=int(self.grid.density.numel() * self.update_fraction))


def importance_samples(coarse: RaySamples, weights: Tensor, n_fine: int, far: Tensor, perturb: bool = False) -> RaySamples:
    """NeRF's hierarchical sampling: ``n_fine`` samples per ray by inverse transform sampling of the
    coarse weights on the bins between coarse sample points, merged with the coarse points.

    coarse: regular samples (``per_ray`` S) from :func:`centred_intervals`; weights (M,) their
    weights; far (R,) the box exit. Returns regular samples (S + n_fine per ray) whose quadrature
    lengths are ``t_{i+1} - t_i`` and ``far - t_last`` (eq. 3 of NeRF, see :func:`intervals_from_samples`).
    """
    R, S = coarse.n_rays, coarse.per_ray
    if S is None:
        raise ValueError("importance_samples: the coarse samples must have a regular layout (per_ray)")
    t_coarse = coarse.t_mids.view(R, S)
    mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
    t_fine = sample_pdf(mids, weights.detach().view(R, S)[:, 1:-1], n_fine, deterministic=not perturb)
    t_all = torch.sort(torch.cat([t_coarse, t_fine], -1), -1).values
    return centred_intervals(t_all, intervals_from_samples(t_all, far))
