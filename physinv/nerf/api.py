"""Python API over a trained run: load it, query density and colour anywhere, render, evaluate, mesh.

>>> run = load_run("runs/lego")                     # doctest: +SKIP
>>> sigma = run.density(points)                      # (N,) 1/scene unit
>>> rgb = run.radiance(points, dirs)                 # (N, 3) in [0, 1]
>>> image = run.render_image(c2w, intrinsics, 64, 64)["rgb"]
>>> image = run.render_image(c2w, intrinsics, 64, 64, light="sky1")["rgb"]  # doctest: +SKIP

A run with an appearance embedding (``appearance_dim`` > 0) renders under one of its learnt codes:
``light`` names a light it was trained under (or is a code index); an unseen light, no light, or
``light=-1`` takes the mean of its codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from physinv.core.camera import image_rays
from physinv.core.metrics import chamfer_distance, psnr, ssim
from physinv.core.train import CHECKPOINT_NAME, checkpoint_weights, load_checkpoint
from physinv.errors import input_error
from physinv.io.dataset import load_views
from physinv.nerf.config import NerfConfig
from physinv.nerf.models import build_model
from physinv.nerf.train import appearance_index, render_rays_chunked


@dataclass
class NerfRun:
    """A trained model with its scene box, background and training image size."""

    model: torch.nn.Module
    config: NerfConfig
    aabb: Tensor  # (2, 3)
    background: Tensor  # (3,)
    width: int
    height: int
    data: Path | None
    run_dir: Path
    step: int
    appearance_lights: list[str | None] = field(default_factory=list)  # the light of each appearance code (None: a training frame's own)

    @property
    def device(self) -> torch.device:
        return self.aabb.device

    @torch.no_grad()
    def density(self, points: Tensor, chunk: int = 65536) -> Tensor:
        """Density (N,) in 1/scene unit at world points (N, 3); 0 outside the scene box."""
        return torch.cat([self.model.density(p.to(self.device).float()) for p in points.split(chunk)]) if len(points) else points.new_zeros(0)

    @torch.no_grad()
    def radiance(self, points: Tensor, dirs: Tensor, chunk: int = 65536) -> Tensor:
        """Emitted colour (N, 3) in [0, 1] at world points (N, 3) seen along unit directions (N, 3)
        (a run with an appearance embedding: under the mean code)."""
        out = [self.model.radiance(p.to(self.device).float(), d.to(self.device).float()) for p, d in zip(points.split(chunk), dirs.split(chunk))]
        return torch.cat(out) if out else points.new_zeros(0, 3)

    @torch.no_grad()
    def geometry(self, points: Tensor, chunk: int = 65536) -> dict[str, Tensor]:
        """``sigma`` (N,) and ``geo_feature`` (N, F) at world points (N, 3): what another field reads from this one."""
        parts = [self.model.geometry(p.to(self.device).float()) for p in points.split(chunk)]
        if not parts:
            return {"sigma": points.new_zeros(0), "geo_feature": points.new_zeros(0, self.geo_feature_dim)}
        return {k: torch.cat([part[k] for part in parts]) for k in ("sigma", "geo_feature")}

    @property
    def geo_feature_dim(self) -> int:
        """Width F of ``geo_feature``: the trunk width (nerf) or 1 + geo_features (ngp, plain)."""
        return self.config.width if self.config.method == "nerf" else 1 + self.config.geo_features

    def code_index(self, light: str | int | None = None) -> int | None:
        """The appearance code to render with: None for a run without an appearance embedding (a
        light name is then ignored: the run has one look for all lights); else the code of ``light``
        (a light name the run was trained under, or a code index), -1 (the mean code) for an unseen
        name or None. An index out of range is a ``ValueError``."""
        n = len(self.appearance_lights) if self.config.appearance_dim else 0
        if isinstance(light, int) and not isinstance(light, bool):
            if not -1 <= light < n:
                raise ValueError(f"appearance code {light} out of range: the run has {n} codes (-1: their mean)")
            return light
        if not n:
            return None
        return appearance_index([light], self.appearance_lights)[0]

    @torch.no_grad()
    def render_rays(self, origins: Tensor, dirs: Tensor, background: Tensor | None = None, extra_features=None, light: str | int | None = None) -> dict[str, Tensor]:
        """Per ray: rgb (R, 3), depth (R,) (expected distance along the ray), opacity (R,), and each
        per-sample head of ``extra_features(points (M, 3), dirs (M, 3), field_out) -> dict``
        composited (R, C), for rays (R, 3); in chunks, without gradients. ``light``: the appearance
        code to render with (:meth:`code_index`; runs with an appearance embedding only)."""
        bg = self.background if background is None else background.to(self.device)
        o, d = origins.to(self.device).float(), dirs.to(self.device).float()
        index = self.code_index(light)
        codes = {} if index is None else {"ray_codes": self.model.appearance_codes(torch.tensor([index], device=self.device)).expand(len(o), -1)}
        return render_rays_chunked(self.model, o, d, bg, self.config.chunk_rays, extra_features=extra_features, **codes)

    def render_image(
        self, c2w: Tensor, intrinsics: Tensor, width: int, height: int, background: Tensor | None = None, extra_features=None, distortion: Tensor | None = None, light: str | int | None = None
    ) -> dict[str, Tensor]:
        """One view: every per-ray output of :meth:`render_rays` as an image, rgb (H, W, 3), depth (H, W), opacity (H, W), ...
        ``distortion``: None (pinhole) or (6,) lens coefficients (:mod:`physinv.core.camera`).
        ``light``: the appearance code (:meth:`code_index`)."""
        dist = None if distortion is None else distortion.to(self.device).float()
        o, d = image_rays(c2w.to(self.device).float(), intrinsics.to(self.device).float(), width, height, dist)
        out = self.render_rays(o.reshape(-1, 3), d.reshape(-1, 3), background, extra_features, light)
        return {k: v.view(height, width, *v.shape[1:]) for k, v in out.items()}

    def ray_samples(self, origins: Tensor, dirs: Tensor, grad: bool = False) -> dict:
        """The frozen field along rays (R, 3): packed ``samples`` (:class:`~physinv.core.volume.RaySamples`),
        their ``points`` (M, 3), volume-rendering ``weights`` (M,), ``sigma`` (M,) and ``geo_feature``
        (M, F), and per ray ``depth``/``opacity`` (R,). Another field trained along these samples
        composites its own features with these weights (:func:`~physinv.core.volume.composite_samples`).

        ``grad``: keep the autograd graph (to the field's parameters and, through the points, to
        positions); by default everything is computed without gradients. Deterministic samples
        (no jitter), so the same rays give the same samples."""
        o, d = origins.to(self.device).float(), dirs.to(self.device).float()
        with torch.set_grad_enabled(grad):
            return self.model.ray_samples(o, d, perturb=False)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", weights: str = "kept") -> NerfRun:
    """Load ``<run_dir>/checkpoint.pt`` (``weights_only=True``) into a :class:`NerfRun` on ``device``.

    ``weights``: ``kept`` — the model early stopping kept (best validation PSNR, see
    :mod:`physinv.nerf.train`) where the run has one, else the last step's; ``last`` — the last
    step's. :attr:`NerfRun.step` is the step the loaded weights come from."""
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location=device)
    cfg_dict = ckpt.get("config", {})
    if "nerf" not in cfg_dict or "model" not in ckpt.get("state", {}):
        raise input_error(run_dir / CHECKPOINT_NAME, "config.nerf", "not a physinv nerf run")
    known = {f.name for f in fields(NerfConfig)}
    saved = {"density_bias": 0.0, **cfg_dict["nerf"]}  # runs saved before density_bias existed had none
    config = NerfConfig(**{k: v for k, v in saved.items() if k in known})
    aabb = torch.tensor(cfg_dict["aabb"], dtype=torch.float32, device=device)
    code_lights = list(cfg_dict.get("appearance_lights") or [])
    model = build_model(config, aabb, len(code_lights)).to(device)
    state, step = checkpoint_weights(ckpt, weights)
    model.load_state_dict(state)
    model.eval()
    return NerfRun(
        model=model,
        config=config,
        aabb=aabb,
        background=torch.tensor(cfg_dict["background"], dtype=torch.float32, device=device),
        width=int(cfg_dict["width"]),
        height=int(cfg_dict["height"]),
        data=Path(cfg_dict["data"]) if cfg_dict.get("data") else None,
        run_dir=run_dir,
        step=step,
        appearance_lights=code_lights,
    )


def evaluate(run: NerfRun, data_dir: str | Path, split: str = "test") -> dict:
    """Render every view of ``split`` and score it: mean PSNR/SSIM and the per-view lists.

    Views of another size than the training images are refused (the run's sampling density, and
    the comparison, would silently change). A run with an appearance embedding renders each view
    with the code of its ``light`` when the run was trained under that light, else with the mean
    code (``mean_code_views`` counts those).
    """
    views = load_views(data_dir, split, device=run.device)
    if (views.width, views.height) != (run.width, run.height):
        raise input_error(
            views.source, "frames", f"the {split} images are {views.width}x{views.height} but the run in {run.run_dir} was trained on {run.width}x{run.height} images"
        )
    psnrs, ssims, mean_code = [], [], 0
    for i in range(views.images.shape[0]):
        lens = {} if views.distortion is None else {"distortion": views.distortion[i]}  # pinhole data: the plain call
        if run.config.appearance_dim:  # the view's light's code (without an embedding: the plain call)
            lens["light"] = views.lights[i] if i < len(views.lights) else None
            mean_code += run.code_index(lens["light"]) == -1
        pred = run.render_image(views.c2w[i], views.intrinsics[i], views.width, views.height, views.background, **lens)["rgb"].clamp(0, 1)
        psnrs.append(float(psnr(pred, views.images[i])))
        ssims.append(float(ssim(pred, views.images[i])))
    return {
        "method": run.config.method,
        "split": split,
        "step": run.step,
        "views": len(psnrs),
        "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "psnr_per_view": [round(p, 3) for p in psnrs],
        "ssim_per_view": [round(s, 4) for s in ssims],
        **({"mean_code_views": int(mean_code)} if run.config.appearance_dim else {}),
    }


@torch.no_grad()
def density_grid(run: NerfRun, resolution: int) -> np.ndarray:
    """Density sampled at the ``resolution^3`` vertices of a lattice spanning the box: (r, r, r) float32."""
    lo, hi = run.aabb[0], run.aabb[1]
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution, device=run.device) for i in range(3)]
    out = np.empty((resolution,) * 3, np.float32)
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), -1).reshape(-1, 2)  # the same for every slab
    for i, x in enumerate(axes[0]):  # one slab at a time keeps memory at r^2 points
        pts = torch.cat([x.expand(yz.shape[0], 1), yz], -1)
        out[i] = run.density(pts).view(resolution, resolution).cpu().numpy()
    return out


def default_level(run: NerfRun, resolution: int) -> float:
    """Density at which one lattice cell of the mesh grid is half opaque: ``ln 2 / cell size``."""
    cell = float((run.aabb[1] - run.aabb[0]).max()) / (resolution - 1)
    return math.log(2.0) / cell


def extract_mesh(run: NerfRun, resolution: int = 256, level: float | None = None):
    """Marching cubes of the density at ``level`` (default :func:`default_level`) -> ``trimesh.Trimesh`` in world units."""
    import trimesh
    from skimage.measure import marching_cubes

    level = default_level(run, resolution) if level is None else float(level)
    grid = density_grid(run, resolution)
    if not (grid.min() < level < grid.max()):
        raise input_error(run.run_dir, "--level", f"density {level:.4g} is not crossed inside the box (density range {grid.min():.4g} .. {grid.max():.4g})")
    lo, hi = run.aabb[0].cpu().numpy(), run.aabb[1].cpu().numpy()
    spacing = (hi - lo) / (resolution - 1)
    verts, faces, _, _ = marching_cubes(grid, level=level, spacing=tuple(spacing.tolist()))
    return trimesh.Trimesh(vertices=verts + lo, faces=faces, process=False)


def mesh_chamfer(mesh, gt_path: str | Path, n_points: int = 20000, seed: int = 0) -> dict[str, float]:
    """Chamfer distances between surface samples of ``mesh`` and the ground-truth mesh file."""
    import trimesh

    from physinv.io.mesh import load_mesh

    gt = load_mesh(gt_path)
    a = trimesh.sample.sample_surface(mesh, n_points, seed=seed)[0]
    b = trimesh.sample.sample_surface(gt, n_points, seed=seed)[0]
    res = chamfer_distance(torch.as_tensor(np.asarray(a), dtype=torch.float32), torch.as_tensor(np.asarray(b), dtype=torch.float32))
    return {k: float(v) for k, v in res.items()}
