"""Radiance fields and their renderers: the faithful NeRF (coarse + fine) and the hash-grid model
(``ngp`` with an occupancy grid and packed samples, ``plain`` with uniform samples in the box).

Every model exposes the same interface:

* ``render_rays(origins (R, 3), dirs (R, 3), background (3,), perturb) -> dict`` with ``rgb`` (R, 3),
  ``depth`` (R,) (expected distance along the unit ray, divided by nothing: background rays add 0),
  ``opacity`` (R,), and for ``nerf`` also ``rgb_coarse``;
* ``density(points (N, 3)) -> (N,)`` in 1/scene unit, 0 outside the scene box;
* ``radiance(points (N, 3), dirs (N, 3)) -> (N, 3)`` colour in [0, 1].
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from physinv.core.encoding import HashGridEncoding, SHEncoding, positional_encoding
from physinv.core.field import MLP, trunc_exp
from physinv.core.sampling import (
    OccupancyGrid,
    cull_occluded,
    intervals_from_samples,
    grid_step_for,
    ray_aabb_intersect,
    sample_pdf,
    stratified_samples,
)
from physinv.core.volume import render_packed, render_padded
from physinv.nerf.config import NerfConfig


def _inside(points: Tensor, aabb: Tensor) -> Tensor:
    return ((points >= aabb[0]) & (points <= aabb[1])).all(-1)


def _render_samples(field: nn.Module, origins: Tensor, dirs: Tensor, t: Tensor, delta: Tensor, background: Tensor) -> dict[str, Tensor]:
    """Evaluate ``field`` at R x S samples at distances ``t`` (R, S) along rays (R, 3) with
    interval lengths ``delta`` (R, S) and composite them (:func:`render_padded`)."""
    R, S = t.shape
    pts = origins.unsqueeze(1) + dirs.unsqueeze(1) * t.unsqueeze(-1)
    sigma, rgb = field(pts.reshape(-1, 3), dirs.unsqueeze(1).expand(R, S, 3).reshape(-1, 3))
    return render_padded(sigma.view(R, S), delta, t, {"rgb": rgb.view(R, S, 3)}, background)


class NeRFField(nn.Module):
    """NeRF's MLP: gamma(x) (L=10) -> 8 x 256 ReLU (input again at the fifth layer) -> sigma (ReLU)
    and a 256 feature; [feature, gamma(d) (L=4)] -> 128 ReLU -> RGB (sigmoid). While training,
    N(0, ``density_noise_std``^2) noise is added to sigma before its ReLU.

    Positions are mapped from the scene box to [-1, 1]^3 before the encoding, as the paper assumes.
    """

    def __init__(self, aabb: Tensor, pos_freqs: int = 10, dir_freqs: int = 4, width: int = 256, depth: int = 8, skip_layer: int = 4, density_noise_std: float = 0.0):
        super().__init__()
        self.pos_freqs, self.dir_freqs, self.density_noise_std = pos_freqs, dir_freqs, density_noise_std
        self.register_buffer("aabb", aabb.detach().clone().float())
        pos_dim, dir_dim = 3 * (2 * pos_freqs + 1), 3 * (2 * dir_freqs + 1)
        self.trunk = MLP(pos_dim, 0, width=width, depth=depth, skips=(skip_layer,))
        self.sigma_head = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.colour = MLP(width + dir_dim, 3, width=width // 2, depth=1, output_activation="sigmoid")

    def normalise(self, points: Tensor) -> Tensor:
        return 2.0 * (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) - 1.0

    def forward(self, points: Tensor, dirs: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """points (N, 3), dirs (N, 3) unit or None -> sigma (N,), rgb (N, 3) or None."""
        h = self.trunk(positional_encoding(self.normalise(points), self.pos_freqs))
        raw = self.sigma_head(h).squeeze(-1)
        if self.training and self.density_noise_std > 0:  # the authors' raw_noise_std: keeps the ReLU alive
            raw = raw + self.density_noise_std * torch.randn_like(raw)
        sigma = torch.relu(raw)
        sigma = torch.where(_inside(points, self.aabb), sigma, torch.zeros_like(sigma))
        if dirs is None:
            return sigma, None
        rgb = self.colour(torch.cat([self.feature(h), positional_encoding(dirs, self.dir_freqs)], -1))
        return sigma, rgb


class NGPField(nn.Module):
    """instant-ngp field: hash grid -> 1x64 MLP -> 16 values (the first plus ``density_bias`` is the
    log density, trunc_exp); [those 16, SH(d)] -> 2x64 MLP -> RGB (sigmoid)."""

    def __init__(self, aabb: Tensor, config: NerfConfig):
        super().__init__()
        c = config
        self.register_buffer("aabb", aabb.detach().clone().float())
        self.encoding = HashGridEncoding(c.levels, c.features_per_level, c.log2_table_size, c.base_resolution, c.finest_resolution, sparse_grad=bool(c.sparse_grad))
        self.density_net = MLP(self.encoding.out_dim, 1 + c.geo_features, width=c.hidden, depth=1)
        self.dir_encoding = SHEncoding(c.sh_l_max)
        self.colour_net = MLP(1 + c.geo_features + self.dir_encoding.out_dim, 3, width=c.hidden, depth=2, output_activation="sigmoid")
        self.density_bias = c.density_bias
        self.autocast = False  # bf16 autocast of the MLPs (set on CUDA)

    def _amp(self):
        if self.autocast and self.aabb.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, points: Tensor, dirs: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """points (N, 3), dirs (N, 3) unit or None -> sigma (N,), rgb (N, 3) or None (float32)."""
        unit = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        feats = self.encoding(unit)
        with self._amp():
            h = self.density_net(feats)
        h = h.float()
        sigma = trunc_exp(h[:, 0] + self.density_bias)
        sigma = torch.where(_inside(points, self.aabb), sigma, torch.zeros_like(sigma))
        if dirs is None:
            return sigma, None
        with self._amp():
            rgb = self.colour_net(torch.cat([h, self.dir_encoding(dirs)], -1))
        return sigma, rgb.float()


class NerfModel(nn.Module):
    """The faithful NeRF: a coarse and a fine :class:`NeRFField` with hierarchical sampling."""

    method = "nerf"

    def __init__(self, aabb: Tensor, config: NerfConfig):
        super().__init__()
        self.config = config
        self.register_buffer("aabb", aabb.detach().clone().float())
        kw = dict(pos_freqs=config.pos_freqs, dir_freqs=config.dir_freqs, width=config.width, depth=config.depth, skip_layer=config.skip_layer, density_noise_std=config.density_noise_std)
        self.coarse = NeRFField(aabb, **kw)
        self.fine = NeRFField(aabb, **kw)

    def density(self, points: Tensor) -> Tensor:
        return self.fine(points, None)[0]

    def radiance(self, points: Tensor, dirs: Tensor) -> Tensor:
        return self.fine(points, dirs)[1]

    def render_rays(self, origins: Tensor, dirs: Tensor, background: Tensor, perturb: bool = False) -> dict[str, Tensor]:
        c = self.config
        near, far, hit = ray_aabb_intersect(origins, dirs, self.aabb)
        far = torch.where(hit, far, near)  # a ray that misses the box has nothing to integrate
        t_coarse = stratified_samples(near, far, c.coarse_samples, perturb=perturb)
        coarse = _render_samples(self.coarse, origins, dirs, t_coarse, intervals_from_samples(t_coarse, far), background)
        # NeRF: fine samples from the coarse weights on the bins between coarse sample midpoints
        mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
        t_fine = sample_pdf(mids, coarse["weights"][:, 1:-1], c.fine_samples, deterministic=not perturb)
        t_all = torch.sort(torch.cat([t_coarse, t_fine], -1), -1).values
        fine = _render_samples(self.fine, origins, dirs, t_all, intervals_from_samples(t_all, far), background)
        return {"rgb": fine["rgb"], "depth": fine["depth"], "opacity": fine["opacity"], "rgb_coarse": coarse["rgb"], "n_samples": torch.tensor(t_all.numel())}


class NGPModel(nn.Module):
    """Hash-grid field rendered either with an occupancy grid and packed samples (``ngp``) or
    with uniform stratified samples in the box (``plain``)."""

    def __init__(self, aabb: Tensor, config: NerfConfig):
        super().__init__()
        self.config, self.method = config, config.method
        self.register_buffer("aabb", aabb.detach().clone().float())
        self.field = NGPField(aabb, config)
        self.step = grid_step_for(aabb, config.render_steps or 256)  # marching step (scene units)
        # training steps left without the early-termination pass (see _render_packed); a buffer so
        # that a resumed run makes the same choices
        self.register_buffer("cull_skip", torch.zeros((), dtype=torch.long))
        self.grid = (
            OccupancyGrid(aabb, config.grid_resolution or 64, config.grid_decay, config.grid_threshold, step=self.step, warmup_steps=config.grid_warmup_updates)
            if config.method == "ngp"
            else None
        )

    def enable_cuda_speedups(self) -> None:
        """bf16 autocast (and, when configured, torch.compile) for the MLPs; no-op on CPU."""
        if not self.aabb.is_cuda:
            return
        self.field.autocast = self.config.mixed_precision
        if self.config.compile:
            self.field.density_net = torch.compile(self.field.density_net)
            self.field.colour_net = torch.compile(self.field.colour_net)

    def density(self, points: Tensor) -> Tensor:
        return self.field(points, None)[0]

    def radiance(self, points: Tensor, dirs: Tensor) -> Tensor:
        return self.field(points, dirs)[1]

    @torch.no_grad()
    def update_grid(self, step: int) -> None:
        """EMA update of the occupancy grid every ``grid_update_every`` steps (``ngp`` only).

        The first update waits for step ``grid_update_every``: at step 0 the field is still its
        uniform initial fog and an update would teach the grid nothing."""
        c = self.config
        if self.grid is None or step == 0 or step % c.grid_update_every != 0:
            return
        n = int(self.grid.density.numel() * c.grid_update_fraction)
        self.grid.update(self.density, n_cells=n)

    def render_rays(self, origins: Tensor, dirs: Tensor, background: Tensor, perturb: bool = False) -> dict[str, Tensor]:
        if self.grid is None:
            return self._render_uniform(origins, dirs, background, perturb)
        return self._render_packed(origins, dirs, background, perturb)

    def _render_uniform(self, origins: Tensor, dirs: Tensor, background: Tensor, perturb: bool) -> dict[str, Tensor]:
        S = self.config.samples_per_ray
        near, far, hit = ray_aabb_intersect(origins, dirs, self.aabb)
        far = torch.where(hit, far, near)
        t = stratified_samples(near, far, S, perturb=perturb)
        R = t.shape[0]
        delta = ((far - near) / S).unsqueeze(-1).expand(R, S)
        out = _render_samples(self.field, origins, dirs, t, delta, background)
        return {"rgb": out["rgb"], "depth": out["depth"], "opacity": out["opacity"], "n_samples": torch.tensor(R * S)}

    def _render_packed(self, origins: Tensor, dirs: Tensor, background: Tensor, perturb: bool) -> dict[str, Tensor]:
        R = origins.shape[0]
        s = self.grid.sample(origins, dirs, self.step, perturb=perturb)
        ridx, t0, t1 = s["ray_indices"], s["t_starts"], s["t_ends"]
        skip = self.training and int(self.cull_skip) > 0
        if self.config.early_stop_eps > 0 and ridx.numel() > 0 and not skip:
            # early ray termination: drop samples behind opaque surfaces before the gradient pass.
            # The pass costs a density evaluation per sample it visits; while the field is still
            # transparent (early training) it removes little, so it is then retried only every 8 calls.
            keep = cull_occluded(self.density, origins, dirs, ridx, t0, t1, R, eps=self.config.early_stop_eps)
            if self.training and float(keep.float().mean()) > 0.8:
                self.cull_skip.fill_(8)
            ridx, t0, t1 = ridx[keep], t0[keep], t1[keep]
        elif skip:
            self.cull_skip -= 1
        mid = 0.5 * (t0 + t1)
        sigma, rgb = self.field(origins[ridx] + dirs[ridx] * mid.unsqueeze(-1), dirs[ridx])
        out = render_packed(sigma, t1 - t0, mid, ridx, R, {"rgb": rgb}, background)
        return {"rgb": out["rgb"], "depth": out["depth"], "opacity": out["opacity"], "n_samples": torch.tensor(ridx.numel())}


def build_model(config: NerfConfig, aabb: Tensor) -> nn.Module:
    """The model of ``config.method`` over the scene box ``aabb`` (2, 3)."""
    if config.method == "nerf":
        return NerfModel(aabb, config)
    return NGPModel(aabb, config)
