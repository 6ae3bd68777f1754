"""A fitted relighting run: load it, render any pose under any light, evaluate, edit, export.

Evaluation (``evaluate``), per test frame: the environment map its ``light`` names is fitted with K
SGs (``core.sg.fit_envmap``, through the data's ``envmap_to_world``) and the object rendered under
it; the render is compared with the image on the pixels inside the ground-truth mask, after
PhySG's per-channel median scale alignment s_c = median(I_c / I^_c) (computed on linear radiance,
over mask pixels the surface hits; the light/albedo scale is not identifiable). Reported:
``psnr`` / ``ssim`` (masked, aligned, per view then averaged; SSIM is the SSIM map averaged over the
mask; mask pixels the surface misses show the background, as a render does), ``psnr_unaligned`` (masked), ``psnr_full_image`` (aligned render over the data's background,
every pixel), ``albedo_psnr`` (aligned, masked, sRGB-encoded like the stored maps) when albedo maps
exist and ``normal_error_deg`` (mean angle on pixels inside the mask that the surface hits) when
normal maps exist.

NeRD runs (``relight.nerd``) load the same way; ``RelightRun.light_sets`` names their learnt
illuminations. Their evaluation renders a frame whose ``light`` names a training illumination under
the learnt one, adds ``psnr_render`` (the run's own soft-opacity render, every pixel, unaligned: the
novel-view score ``nerf eval`` reports) and, for frames under other lights, ``psnr_no_relight``
(the same view under the best learnt illumination, scored like ``psnr``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from physinv.config import build_config
from physinv.core import sg
from physinv.core.metrics import mse_to_psnr
from physinv.core.camera import image_rays
from physinv.core.train import CHECKPOINT_NAME, checkpoint_weights, load_checkpoint
from physinv.errors import input_error
from physinv.io.dataset import load_views
from physinv.io.images import linear_to_srgb, srgb_to_linear
from physinv.relight.config import RelightConfig
from physinv.relight.data import load_relight_views, read_envmap
from physinv.relight.physg import PhysgModel
from physinv.relight.train import build_model, to_display


@dataclass
class RelightRun:
    model: PhysgModel  # or relight.nerd.NerdModel
    config: RelightConfig
    centre: Tensor  # (3,) world centre of the normalisation
    scale: float  # world units per normalised unit
    linear: bool  # the training images were HDR
    background: Tensor  # (3,)
    data: Path | None
    run_dir: Path
    light_sets: list[str | None] = field(default_factory=list)  # NeRD: the name of each learnt illumination

    @property
    def method(self) -> str:
        return self.config.method

    def learnt_light(self, name: str | None) -> sg.SGLight | None:
        """The learnt illumination a training ``light`` name refers to (NeRD), else None."""
        if name is not None and name in self.light_sets:
            return self.model.light(self.light_sets.index(name))
        return None

    @property
    def device(self) -> torch.device:
        return self.centre.device

    def normalise_c2w(self, c2w: Tensor) -> Tensor:
        """World camera-to-world (4, 4) -> the normalised frame's."""
        out = c2w.to(self.device, torch.float32).clone()
        out[:3, 3] = (out[:3, 3] - self.centre) / self.scale
        return out

    def render_image(self, c2w: Tensor, intrinsics: Tensor, width: int, height: int, light: sg.SGLight | None = None, chunk: int = 4096, **overrides) -> dict[str, Tensor]:
        """Render a world-space camera (c2w (4, 4), intrinsics (4,)): ``rgb`` (H, W, 3) linear,
        ``diffuse``, ``specular``, ``albedo``, ``normal`` (H, W, 3), ``hit`` (H, W) bool. Background pixels are 0."""
        o, d = image_rays(self.normalise_c2w(c2w), intrinsics.to(self.device, torch.float32), width, height)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        light = self.model.light() if light is None else light.to(self.device)
        if self.method == "nerd":  # autograd normals keep a graph per chunk: smaller chunks
            chunk = min(chunk, 1024)
        parts: dict[str, list[Tensor]] = {}
        for s in range(0, o.shape[0], chunk):
            out = self.model.render_rays(o[s:s + chunk], d[s:s + chunk], light=light, differentiable=False, **overrides)
            for k in ("rgb", "diffuse", "specular", "albedo", "normal", "hit", "opacity", "base_colour", "metallic", "roughness"):
                if k in out:
                    parts.setdefault(k, []).append(out[k].detach())
        return {k: torch.cat(v).reshape(height, width, -1).squeeze(-1) if k in ("hit", "opacity") else torch.cat(v).reshape(height, width, -1) for k, v in parts.items()}

    def light_from_map(self, image: np.ndarray | Tensor, to_world: Tensor | None = None, lobes: int | None = None, steps: int = 500) -> tuple[sg.SGLight, float]:
        """Fit an SG light (the run's lobe count by default) to an equirectangular map (H, 2H, 3)."""
        t = torch.as_tensor(np.asarray(image), dtype=torch.float32, device=self.device)
        return sg.fit_envmap(t, lobes=lobes or self.config.lobes, steps=steps, to_world=to_world)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", weights: str = "kept") -> RelightRun:
    """Load ``<run_dir>/checkpoint.pt`` written by ``relight fit`` (``weights_only``).

    ``weights``: ``kept`` — the model early stopping kept (NeRD with ``val_fraction`` > 0, see
    ``relight.nerd_fit``), the last one where the run kept none; ``last`` — the last step's."""
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location=device)
    conf = ckpt.get("config", {})
    if "relight" not in conf:
        raise input_error(run_dir / CHECKPOINT_NAME, "config.relight", "not a relight run (fitted by `physinv relight fit`?)")
    cfg = build_config(RelightConfig, conf["relight"], str(run_dir / CHECKPOINT_NAME))
    model = build_model(cfg, len(conf.get("light_sets") or [None])).to(device)
    model.load_state_dict(checkpoint_weights(ckpt, weights)[0])
    model.eval()
    return RelightRun(
        model, cfg, torch.tensor(conf["centre"], dtype=torch.float32, device=device), float(conf["scale"]), bool(conf["linear"]),
        torch.tensor(conf["background"], dtype=torch.float32, device=device), Path(conf["data"]) if conf.get("data") else None, run_dir,
        list(conf.get("light_sets") or []),
    )


# ----------------------------------------------------------------------------------------------
# metrics


def median_scale(pred_linear: Tensor, target_linear: Tensor, mask: Tensor) -> Tensor:
    """PhySG's per-channel scale s_c = median(target_c / pred_c) over ``mask`` pixels (H, W) where the
    prediction is positive; (3,) (ones where there is nothing to align on)."""
    sel = mask & (pred_linear.min(-1).values > 1e-6)
    if sel.sum() == 0:
        return torch.ones(3, device=pred_linear.device)
    return (target_linear[sel] / pred_linear[sel]).median(0).values


def masked_psnr(pred: Tensor, target: Tensor, mask: Tensor) -> float:
    """PSNR (dB) over the pixels inside ``mask`` (H, W) of (H, W, 3) images in [0, 1]."""
    mse = (pred[mask] - target[mask]).square().mean()
    return float(mse_to_psnr(mse))


def masked_ssim(pred: Tensor, target: Tensor, mask: Tensor) -> float:
    """SSIM map (Gaussian window 11, sigma 1.5) averaged over the pixels inside ``mask``."""
    _, full = structural_similarity_index_measure(pred.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None], data_range=1.0, return_full_image=True)
    return float(full[0].mean(0)[mask].mean())


def _target_linear(image: Tensor, linear: bool) -> Tensor:
    return image if linear else srgb_to_linear(image.clamp(0, 1))


def _scored(run: RelightRun, out: dict[str, Tensor], target: Tensor, mask: Tensor, linear: bool, background: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(aligned render, raw render, the model's own soft render) of one view, display-encoded (H, W, 3)."""
    target_lin = _target_linear(target, linear)
    scale = median_scale(out["rgb"], target_lin, mask & out["hit"])
    # what a render shows: the surface where rays hit it, the background elsewhere (also inside the mask)
    hit = out["hit"][..., None].float()
    aligned = to_display(out["rgb"] * scale, linear).clamp(0, 1) * hit + background * (1 - hit)
    raw = to_display(out["rgb"], linear).clamp(0, 1) * hit + background * (1 - hit)
    alpha = out["opacity"][..., None] if "opacity" in out else hit
    soft = to_display(out["rgb"], linear).clamp(0, 1) * alpha + background * (1 - alpha)
    return aligned, raw, soft


def evaluate(run: RelightRun, data_dir: str | Path, split: str = "test", lobes: int | None = None, fit_steps: int = 500, learnt_lights: bool = True) -> dict:
    """Relight every view of ``split`` under the map its ``light`` names and score it (module docstring).

    NeRD runs: a frame whose ``light`` names a training illumination is rendered under the learnt
    one (``learnt_lights``; else its map is fitted like any other), and ``psnr_render`` (every pixel,
    no alignment: the run's own prediction, as ``nerf eval`` scores) is reported; for frames under
    other lights also ``psnr_no_relight``: the same view under the best of the learnt
    illuminations, scored like ``psnr`` (the baseline a relighting must beat)."""
    data_dir = Path(data_dir)
    rv = load_relight_views(data_dir, split, run.device, run.centre, run.scale)
    views = rv.views
    lights: dict[Path, sg.SGLight] = {}
    fit_errors: dict[str, float] = {}
    extras = views.frames_extras
    has_albedo = all("albedo_path" in e for e in extras)
    has_normal = all("normal_path" in e for e in extras)
    maps = tuple(k for k, ok in (("albedo", has_albedo), ("normal", has_normal)) if ok)
    gt_maps = load_views(data_dir, split, device=run.device, maps=maps).maps if maps else {}
    per: dict[str, list[float]] = {k: [] for k in ("psnr", "ssim", "psnr_unaligned", "psnr_full_image", "albedo_psnr", "normal_error_deg", "psnr_render", "psnr_no_relight")}
    nerd = run.method == "nerd"
    sources = []
    for i in range(len(views)):
        learnt = run.learnt_light(views.lights[i]) if nerd and learnt_lights else None
        world_c2w = views.c2w[i].clone()
        world_c2w[:3, 3] = world_c2w[:3, 3] * rv.scale + rv.centre.to(world_c2w)
        if learnt is not None:
            light = learnt
            sources.append("learnt")
        else:
            path = views.light_path(i)
            if path not in lights:
                image = read_envmap(path, f"frames[{i}].light")
                lights[path], fit_errors[path.name] = run.light_from_map(image, views.envmap_to_world, lobes, fit_steps)
            light = lights[path]
            sources.append("fitted")
        out = run.render_image(world_c2w, views.intrinsics[i], views.width, views.height, light=light)
        mask = rv.masks[i] > 0.5
        target = views.images[i]
        aligned, raw, soft = _scored(run, out, target, mask, rv.linear, views.background)
        if nerd:
            per["psnr_render"].append(masked_psnr(soft, target, torch.ones_like(mask)))
            if learnt is None and run.light_sets:
                best = -math.inf
                with torch.no_grad():
                    for k in range(len(run.light_sets)):
                        base = run.render_image(world_c2w, views.intrinsics[i], views.width, views.height, light=run.model.light(k))
                        best = max(best, masked_psnr(_scored(run, base, target, mask, rv.linear, views.background)[0], target, mask))
                per["psnr_no_relight"].append(best)
        per["psnr"].append(masked_psnr(aligned, target, mask))
        per["ssim"].append(masked_ssim(aligned, target, mask))
        per["psnr_unaligned"].append(masked_psnr(raw, target, mask))
        per["psnr_full_image"].append(masked_psnr(aligned, target, torch.ones_like(mask)))
        if has_albedo:
            gt_albedo = gt_maps["albedo"][i]
            a_scale = median_scale(out["albedo"], srgb_to_linear(gt_albedo), mask & out["hit"])
            per["albedo_psnr"].append(masked_psnr(linear_to_srgb(out["albedo"] * a_scale).clamp(0, 1), gt_albedo, mask))
        if has_normal:
            gt_n = gt_maps["normal"][i]
            sel = mask & out["hit"] & (gt_n.norm(dim=-1) > 0.5)
            if sel.any():
                cos = (out["normal"][sel] * gt_n[sel]).sum(-1).clamp(-1, 1)
                per["normal_error_deg"].append(float(torch.rad2deg(torch.arccos(cos)).mean()))
    result: dict = {"split": split, "views": len(views)}
    for k, v in per.items():
        if v:
            result[k] = float(np.mean(v))
    result["psnr_per_view"] = per["psnr"]
    result["light_fit_rel_l2"] = fit_errors
    if nerd:
        result["lights_used"] = {k: sources.count(k) for k in ("learnt", "fitted")}
    return result


def write_light(light: sg.SGLight, out_stem: str | Path, height: int = 128, to_world: Tensor | None = None) -> tuple[Path, Path]:
    """The SG light as ``<stem>.json`` (lobes, world axes) and ``<stem>.exr`` (equirectangular, through
    ``to_world``, physinv's synth convention by default)."""
    from physinv.io.hdr import write_hdr
    from physinv.synth.sky import envmap_to_world  # noqa: F401 - synth sits below relight

    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    rot = torch.as_tensor(envmap_to_world(), dtype=torch.float32) if to_world is None else to_world
    json_path, exr_path = stem.with_suffix(".json"), stem.with_suffix(".exr")
    json_path.write_text(json.dumps({**light.to_dict(), "envmap_to_world": rot[:3, :3].tolist()}, indent=1) + "\n")
    write_hdr(exr_path, light.to(rot.device).to_equirect(height, to_world=rot.to(light.axis.device)))
    return json_path, exr_path
