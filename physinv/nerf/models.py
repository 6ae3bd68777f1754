"""Radiance fields and their renderers on the field protocol of :mod:`physinv.core.volume`.

A *field* maps points (and view directions) to a dict of per-sample quantities:
``sigma`` (N,) density in 1/scene unit (0 outside the scene box), ``geo_feature`` (N, F) the
geometry feature the density was read from, and ``rgb`` (N, 3) in [0, 1] when directions are given.

A *model* pairs fields with a sampler and exposes

* ``render_rays(origins (R, 3), dirs (R, 3), background (3,), perturb, extra_features=None) -> dict``:
  per ray ``rgb`` (R, 3), ``depth`` (R,) (expected distance along the unit ray; background adds 0),
  ``opacity`` (R,), for ``nerf`` also ``rgb_coarse``, any extra feature composited (R, C); per
  sample ``weights`` (M,) and the packed ``samples``. ``extra_features(points (M, 3), dirs (M, 3),
  field_out) -> dict`` adds per-sample heads that are composited with the same weights.
  ``ngp``/``plain`` with an appearance embedding also take ``ray_codes`` (R, C): each ray's
  appearance code (:meth:`HashGridNerf.appearance_codes`), handed to the colour net of each of the
  ray's samples through the packed ``ray_indices`` (:func:`radiance_fields_fn`); without it every
  ray gets the mean code;
* ``ray_samples(origins, dirs, perturb=False) -> dict``: the packed ``samples``, their ``points``,
  ``weights``, ``sigma`` and ``geo_feature``, and per ray ``depth``/``opacity`` — what a second field
  (instances, materials) needs to be trained along this one's samples;
* ``density(points)``, ``radiance(points, dirs)``, ``geometry(points)`` (``sigma`` and
  ``geo_feature``), and ``update(step)`` (between training steps).

Methods: ``nerf`` (:class:`NerfModel`, a coarse and a fine :class:`NeRFField`, hierarchical
sampling), ``ngp`` and ``plain`` (:class:`HashGridNerf`: one :class:`NGPField` with an
:class:`~physinv.core.sampling.OccupancyGridSampler` or a :class:`~physinv.core.sampling.UniformSampler`).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor, nn

from physinv.core.encoding import HashGridEncoding, SHEncoding, positional_encoding
from physinv.core.field import MLP, trunc_exp
from physinv.core.sampling import (
    OccupancyGrid,
    OccupancyGridSampler,
    UniformSampler,
    box_interval,
    centred_intervals,
    grid_step_for,
    importance_samples,
    intervals_from_samples,
    stratified_samples,
)
from physinv.core.volume import FieldsFn, RaySamples, render_samples
from physinv.nerf.config import NerfConfig

ExtraFeatures = Callable[[Tensor, Tensor, dict], dict]


def _inside(points: Tensor, aabb: Tensor) -> Tensor:
    return ((points >= aabb[0]) & (points <= aabb[1])).all(-1)


class NeRFField(nn.Module):
    """NeRF's MLP: gamma(x) (L=10) -> 8 x 256 ReLU (input again at the fifth layer) -> sigma (ReLU)
    and a 256 feature; [feature, gamma(d) (L=4)] -> 128 ReLU -> RGB (sigmoid). While training,
    N(0, ``density_noise_std``^2) noise is added to sigma before its ReLU. ``geo_feature`` is the
    trunk's last hidden layer (N, width).

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

    def forward(self, points: Tensor, dirs: Tensor | None = None) -> dict[str, Tensor]:
        """points (N, 3), dirs (N, 3) unit or None -> ``sigma`` (N,), ``geo_feature`` (N, width), ``rgb`` (N, 3) when dirs."""
        h = self.trunk(positional_encoding(self.normalise(points), self.pos_freqs))
        raw = self.sigma_head(h).squeeze(-1)
        if self.training and self.density_noise_std > 0:  # the authors' raw_noise_std: keeps the ReLU alive
            raw = raw + self.density_noise_std * torch.randn_like(raw)
        sigma = torch.relu(raw)
        out = {"sigma": torch.where(_inside(points, self.aabb), sigma, torch.zeros_like(sigma)), "geo_feature": h}
        if dirs is not None:
            out["rgb"] = self.colour(torch.cat([self.feature(h), positional_encoding(dirs, self.dir_freqs)], -1))
        return out

    def density(self, points: Tensor) -> Tensor:
        return self(points)["sigma"]


class NGPField(nn.Module):
    """instant-ngp field: hash grid -> 1x64 MLP -> 16 values (the first plus ``density_bias`` is the
    log density, trunc_exp; all 16 are the ``geo_feature``); [those 16, SH(d)] -> 2x64 MLP -> RGB (sigmoid).

    With ``config.appearance_dim`` = C > 0 the colour MLP also reads an appearance code (C,) per
    sample, one of ``codes`` learnt ones (``appearance``, NeRF-W's appearance embedding; the density
    never sees it), initialised N(0, 0.01^2) so that every illumination starts from the same look.
    """

    def __init__(self, aabb: Tensor, config: NerfConfig, codes: int = 0):
        super().__init__()
        c = config
        self.register_buffer("aabb", aabb.detach().clone().float())
        self.encoding = HashGridEncoding(c.levels, c.features_per_level, c.log2_table_size, c.base_resolution, c.finest_resolution, sparse_grad=bool(c.sparse_grad), backend=c.hash_backend)
        self.density_net = MLP(self.encoding.out_dim, 1 + c.geo_features, width=c.hidden, depth=1)
        self.dir_encoding = SHEncoding(c.sh_l_max)
        self.appearance: nn.Embedding | None = None
        if c.appearance_dim > 0:
            self.appearance = nn.Embedding(max(1, codes), c.appearance_dim)
            nn.init.normal_(self.appearance.weight, std=0.01)
        self.colour_net = MLP(1 + c.geo_features + self.dir_encoding.out_dim + c.appearance_dim, 3, width=c.hidden, depth=2, output_activation="sigmoid")
        self.density_bias = c.density_bias
        self.autocast = False  # bf16 autocast of the MLPs (set on CUDA)

    def _amp(self):
        if self.autocast and self.aabb.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def appearance_codes(self, index: Tensor) -> Tensor:
        """Appearance codes (n, C) of illuminations ``index`` (n,) (int64); -1 picks the mean code
        (a light the run never saw)."""
        if self.appearance is None:
            raise ValueError("this field has no appearance embedding (appearance_dim = 0)")
        table = self.appearance.weight
        return torch.cat([table, table.mean(0, keepdim=True)])[index]  # row -1: the mean

    def forward(self, points: Tensor, dirs: Tensor | None = None, codes: Tensor | None = None) -> dict[str, Tensor]:
        """points (N, 3), dirs (N, 3) unit or None -> ``sigma`` (N,), ``geo_feature`` (N, 16), ``rgb`` (N, 3) when dirs (float32).
        codes: (N, C) appearance code per point (C = ``appearance_dim``); None = the mean code."""
        if codes is not None and self.appearance is None:
            raise ValueError("appearance codes given to a field without an appearance embedding (appearance_dim = 0)")
        unit = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        feats = self.encoding(unit)
        with self._amp():
            h = self.density_net(feats)
        h = h.float()
        sigma = trunc_exp(h[:, 0] + self.density_bias)
        out = {"sigma": torch.where(_inside(points, self.aabb), sigma, torch.zeros_like(sigma)), "geo_feature": h}
        if dirs is not None:
            colour_in = [h, self.dir_encoding(dirs)]
            if self.appearance is not None:
                colour_in.append(self.appearance.weight.mean(0).expand(len(h), -1) if codes is None else codes.float())
            with self._amp():
                out["rgb"] = self.colour_net(torch.cat(colour_in, -1)).float()
        return out

    def density(self, points: Tensor) -> Tensor:
        return self(points)["sigma"]


def radiance_fields_fn(field: nn.Module, origins: Tensor, dirs: Tensor, extra_features: ExtraFeatures | None = None, ray_codes: Tensor | None = None) -> FieldsFn:
    """The ``fields_fn`` of :func:`~physinv.core.volume.render_samples` for a radiance field on rays
    origins, dirs (R, 3): ``sigma`` and ``rgb`` at each sample's midpoint, plus whatever
    ``extra_features(points (M, 3), dirs (M, 3), field_out)`` returns. ``ray_codes`` (R, C): a
    conditioning code per ray (an appearance code), given to the field at each of the ray's samples."""

    def fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> dict[str, Tensor]:
        points = origins[ray_indices] + dirs[ray_indices] * (0.5 * (t_starts + t_ends)).unsqueeze(-1)
        d = dirs[ray_indices]
        out = field(points, d) if ray_codes is None else field(points, d, ray_codes[ray_indices])
        feats = {"sigma": out["sigma"], "rgb": out["rgb"]}
        if extra_features is not None:
            feats.update(extra_features(points, d, out))
        return feats

    return fn


def _sigma_fn(field: nn.Module, origins: Tensor, dirs: Tensor):
    """``sigma_fn(t_starts, t_ends, ray_indices)`` of a field on rays origins, dirs (R, 3)."""

    def fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
        return field.density(origins[ray_indices] + dirs[ray_indices] * (0.5 * (t_starts + t_ends)).unsqueeze(-1))

    return fn


def _geometry_along(field: nn.Module, samples: RaySamples, origins: Tensor, dirs: Tensor) -> dict:
    """Weights, density and geometry feature of ``field`` at ``samples`` (the :meth:`ray_samples` dict)."""
    points = samples.points(origins, dirs)
    out = field(points)
    rendered = render_samples(samples, lambda *_: {"sigma": out["sigma"]})
    return {
        "samples": samples,
        "points": points,
        "weights": rendered["weights"],
        "sigma": out["sigma"],
        "geo_feature": out["geo_feature"],
        "depth": rendered["depth"],
        "opacity": rendered["opacity"],
    }


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
        return self.fine.density(points)

    def radiance(self, points: Tensor, dirs: Tensor) -> Tensor:
        return self.fine(points, dirs)["rgb"]

    def geometry(self, points: Tensor) -> dict[str, Tensor]:
        """``sigma`` (N,) and ``geo_feature`` (N, width) of the fine field at points (N, 3)."""
        return self.fine(points)

    def update(self, step: int) -> None:
        """Nothing between steps (no occupancy grid)."""

    def _coarse_samples(self, origins: Tensor, dirs: Tensor, perturb: bool) -> tuple[RaySamples, Tensor]:
        near, far = box_interval(origins, dirs, self.aabb)  # a ray that misses the box integrates nothing
        t = stratified_samples(near, far, self.config.coarse_samples, perturb=perturb)
        return centred_intervals(t, intervals_from_samples(t, far)), far

    def render_rays(self, origins: Tensor, dirs: Tensor, background: Tensor, perturb: bool = False, extra_features: ExtraFeatures | None = None) -> dict[str, Tensor]:
        coarse_samples, far = self._coarse_samples(origins, dirs, perturb)
        coarse = render_samples(coarse_samples, radiance_fields_fn(self.coarse, origins, dirs), background)
        samples = importance_samples(coarse_samples, coarse["weights"], self.config.fine_samples, far, perturb=perturb)
        out = render_samples(samples, radiance_fields_fn(self.fine, origins, dirs, extra_features), background)
        out.update(rgb_coarse=coarse["rgb"], samples=samples)
        return out

    def ray_samples(self, origins: Tensor, dirs: Tensor, perturb: bool = False) -> dict:
        coarse_samples, far = self._coarse_samples(origins, dirs, perturb)
        with torch.no_grad():  # where the fine samples go carries no gradient (as in NeRF)
            weights = render_samples(coarse_samples, lambda t0, t1, r: {"sigma": _sigma_fn(self.coarse, origins, dirs)(t0, t1, r)})["weights"]
        samples = importance_samples(coarse_samples, weights, self.config.fine_samples, far, perturb=perturb)
        return _geometry_along(self.fine, samples, origins, dirs)


class HashGridNerf(nn.Module):
    """One :class:`NGPField` and a sampler: an occupancy grid with packed marching and early ray
    termination (``ngp``), or uniform stratified samples in the box (``plain``). ``codes``: the
    number of learnt appearance codes when ``config.appearance_dim`` > 0 (one per illumination)."""

    def __init__(self, aabb: Tensor, config: NerfConfig, codes: int = 0):
        super().__init__()
        self.config, self.method = config, config.method
        self.register_buffer("aabb", aabb.detach().clone().float())
        self.field = NGPField(aabb, config, codes)
        if config.method == "ngp":
            step = grid_step_for(aabb, config.render_steps or 256)  # marching step (scene units)
            grid = OccupancyGrid(aabb, config.grid_resolution or 64, config.grid_decay, config.grid_threshold, step=step, warmup_steps=config.grid_warmup_updates)
            self.sampler = OccupancyGridSampler(grid, step, config.early_stop_eps, config.grid_update_every, config.grid_update_fraction)
        else:
            self.sampler = UniformSampler(aabb, config.samples_per_ray or 64)
        self._register_load_state_dict_pre_hook(_rename_legacy_keys)

    def enable_cuda_speedups(self) -> None:
        """bf16 autocast (and, when configured, torch.compile) for the MLPs; no-op on CPU."""
        if not self.aabb.is_cuda:
            return
        self.field.autocast = self.config.mixed_precision
        if self.config.compile:
            self.field.density_net = torch.compile(self.field.density_net)
            self.field.colour_net = torch.compile(self.field.colour_net)

    def density(self, points: Tensor) -> Tensor:
        return self.field.density(points)

    def radiance(self, points: Tensor, dirs: Tensor, codes: Tensor | None = None) -> Tensor:
        """Colour (N, 3) at points (N, 3) along dirs (N, 3); ``codes`` (N, C) appearance codes (None: the mean)."""
        return self.field(points, dirs, codes)["rgb"]

    def appearance_codes(self, index: Tensor) -> Tensor:
        """Codes (n, C) of illuminations ``index`` (n,) (-1: the mean code), for ``render_rays(ray_codes=...)``."""
        return self.field.appearance_codes(index)

    def geometry(self, points: Tensor) -> dict[str, Tensor]:
        """``sigma`` (N,) and ``geo_feature`` (N, 1 + geo_features) of the field at points (N, 3)."""
        return self.field(points)

    def update(self, step: int) -> None:
        """Before training step ``step``: the sampler's update (the occupancy grid's EMA, ``ngp``)."""
        self.sampler.update(step, self.field.density)

    def sample(self, origins: Tensor, dirs: Tensor, perturb: bool = False) -> RaySamples:
        return self.sampler(origins, dirs, _sigma_fn(self.field, origins, dirs), perturb=perturb)

    def render_rays(self, origins: Tensor, dirs: Tensor, background: Tensor, perturb: bool = False, extra_features: ExtraFeatures | None = None, ray_codes: Tensor | None = None) -> dict[str, Tensor]:
        samples = self.sample(origins, dirs, perturb)
        out = render_samples(samples, radiance_fields_fn(self.field, origins, dirs, extra_features, ray_codes), background)
        out["samples"] = samples
        return out

    def ray_samples(self, origins: Tensor, dirs: Tensor, perturb: bool = False) -> dict:
        return _geometry_along(self.field, self.sample(origins, dirs, perturb), origins, dirs)


def _rename_legacy_keys(state: dict, prefix: str, *args) -> None:
    """Runs saved before the sampler split kept the grid at ``grid.*`` and ``cull_skip`` on the model."""
    for key in [k for k in state if k.startswith(prefix + "grid.") or k == prefix + "cull_skip"]:
        state[prefix + "sampler." + key[len(prefix) :]] = state.pop(key)


def build_model(config: NerfConfig, aabb: Tensor, codes: int = 0) -> nn.Module:
    """The model of ``config.method`` over the scene box ``aabb`` (2, 3); ``codes`` appearance codes
    (illuminations) when ``config.appearance_dim`` > 0."""
    if config.method == "nerf":
        return NerfModel(aabb, config)
    return HashGridNerf(aabb, config, codes)
