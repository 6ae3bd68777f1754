"""Instance-NeRF end to end on a trained physinv NeRF run (Instance-NeRF §3, Fig. 2).

``fit_instance``:
1. NeRF-RCNN on the NeRF's radiance + alpha grid -> 3D boxes, classes, 3D instance masks (K);
2. the NeRF's depth and opacity in every training view; the 3D masks projected with occlusion;
   each 2D mask of the segmenter matched to an instance (IoU > 0.05; greedy or Hungarian);
3. the instance field (K + 1 logits) trained on patches of rays: cross-entropy on the matched
   pixels (unmatched/unlabelled ignored) + λ_r · depth-weighted smoothness;
4. refinement: render the field in every training view, snap each map to image/depth edges
   (superpixel vote), and train on those maps for the remaining steps (§3.3.2).

The frozen NeRF is only read through :func:`nerf_samples` (packed samples, their weights and the
NeRF's geometry feature for a batch of rays).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

from physinv.core.camera import image_rays
from physinv.core.metrics import instance_scores
from physinv.core.train import CHECKPOINT_NAME, fit, load_checkpoint, seed_everything
from physinv.errors import PhysinvError, input_error
from physinv.instance.detector import load_detector
from physinv.instance.field import InstanceField, InstanceFieldConfig, composite_logits
from physinv.instance.losses import IGNORE, depth_weighted_smoothness, instance_cross_entropy, refine_labels
from physinv.instance.masks import load_masks
from physinv.instance.matching import match_masks, project_instances
from physinv.instance.nerf_grid import detect_instances, detector_grid_shape, sample_grid
from physinv.io.dataset import load_views


@dataclass
class InstanceConfig:
    """Options of ``physinv instance fit`` (the paper's values where it gives them)."""

    steps: int = 1200  # training steps in total (the paper: 25k + 20k on a GPU)
    refine_at: float = 0.55  # fraction of the steps after which the refined masks take over (25k / 45k)
    patches: int = 8  # patches of rays per step
    patch: int = 8  # patch side, pixels
    lr: float = 1e-2
    smoothness: float = 1.0  # λ_r of the depth-weighted smoothness term
    matching: str = "greedy"  # greedy (the paper) | hungarian
    score_threshold: float = 0.5  # NeRF-RCNN detections kept (the paper's 0.5)
    refine: bool = True
    direct: bool = False  # ablation (the paper's DM-NeRF row): train on the raw, inconsistent ids
    seed: int = 0

    def check(self) -> "InstanceConfig":
        if self.matching not in ("greedy", "hungarian"):
            raise PhysinvError(f"--matching: expected greedy or hungarian, got {self.matching!r}")
        if not 0.0 < self.refine_at <= 1.0:
            raise PhysinvError(f"--refine-at: expected a fraction in (0, 1], got {self.refine_at}")
        if self.smoothness < 0:
            raise PhysinvError(f"--smoothness: expected >= 0, got {self.smoothness}")
        return self


# ----------------------------------------------------------------------------------------------
# the frozen NeRF, seen through one function


def load_nerf(run_dir: str | Path, device) -> object:
    """The NeRF run (``physinv.nerf.api.NerfRun``); a folder that is not one is a one-line error."""
    from physinv.nerf.api import load_run

    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise input_error(run_dir, None, f"not a physinv nerf run (no {CHECKPOINT_NAME}; train one with `physinv nerf train`)")
    return load_run(run_dir, device)


MIN_WEIGHT = 1e-4  # samples that cannot change a pixel are dropped


def nerf_samples(run, origins: Tensor, dirs: Tensor) -> dict:
    """The frozen NeRF along rays (R, 3), through the field protocol (``NerfRun.ray_samples``):
    ``samples`` (RaySamples, weights > 1e-4 only), ``points`` (M, 3), ``weights`` (M,), ``geo`` (M, F)
    the NeRF's geometry feature, ``depth`` (R,), ``opacity`` (R,). No gradients (the NeRF is frozen)."""
    s = run.ray_samples(origins, dirs)
    keep = s["weights"] > MIN_WEIGHT
    return {"samples": s["samples"].select(keep), "points": s["points"][keep], "weights": s["weights"][keep],
            "geo": s["geo_feature"][keep], "depth": s["depth"], "opacity": s["opacity"]}


@torch.no_grad()
def nerf_depth_opacity(run, c2w: Tensor, intrinsics: Tensor, width: int, height: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Depth and opacity (H, W) of one view, from :func:`nerf_samples`."""
    o, d = image_rays(c2w.float().to(run.device), intrinsics.float().to(run.device), width, height)
    depth, opacity = [], []
    for oo, dd in zip(o.reshape(-1, 3).split(chunk), d.reshape(-1, 3).split(chunk)):
        s = nerf_samples(run, oo, dd)
        depth.append(s["depth"])
        opacity.append(s["opacity"])
    return torch.cat(depth).view(height, width), torch.cat(opacity).view(height, width)


# ----------------------------------------------------------------------------------------------
# rendering the instance field


def render_logits(field: InstanceField, run, origins: Tensor, dirs: Tensor, chunk: int = 4096) -> dict[str, Tensor]:
    """Composited logits (R, L), NeRF depth (R,) and opacity (R,) for rays (R, 3)."""
    logits, depth, opacity = [], [], []
    for oo, dd in zip(origins.split(chunk), dirs.split(chunk)):
        s = nerf_samples(run, oo, dd)
        per_sample = field(s["points"], s["geo"])
        logits.append(composite_logits(per_sample, s["weights"], s["samples"], field.background()))
        depth.append(s["depth"])
        opacity.append(s["opacity"])
    return {"logits": torch.cat(logits), "depth": torch.cat(depth), "opacity": torch.cat(opacity)}


@torch.no_grad()
def render_instance_map(field: InstanceField, run, c2w: Tensor, intrinsics: Tensor, width: int, height: int) -> dict[str, Tensor]:
    """One view: ``labels`` (H, W) int64 argmax, ``probability`` (H, W) of that label, ``depth``."""
    o, d = image_rays(c2w.float().to(run.device), intrinsics.float().to(run.device), width, height)
    out = render_logits(field, run, o.reshape(-1, 3), d.reshape(-1, 3))
    prob = out["logits"].softmax(-1)
    p, lab = prob.max(-1)
    return {"labels": lab.view(height, width), "probability": p.view(height, width), "depth": out["depth"].view(height, width)}


# ----------------------------------------------------------------------------------------------
# fit


def _patch_rays(views, n_patches: int, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random square patches: view index (P,), pixel rows (P, s, s) and columns (P, s, s)."""
    device = views.c2w.device
    v = torch.randint(len(views), (n_patches,), generator=gen).to(device)
    r0 = torch.randint(views.height - size + 1, (n_patches,), generator=gen).to(device)
    c0 = torch.randint(views.width - size + 1, (n_patches,), generator=gen).to(device)
    ar = torch.arange(size, device=device)
    rows = (r0[:, None, None] + ar[None, :, None]).expand(-1, size, size)
    cols = (c0[:, None, None] + ar[None, None, :]).expand(-1, size, size)
    return v, rows, cols


def fit_instance(nerf_run: str | Path, data: str | Path, masks_dir: str | Path, out: str | Path, cfg: InstanceConfig | None = None,
                 detector: str | Path | None = None, max_minutes: float | None = None, device: str | torch.device = "cpu", quiet: bool = False) -> dict:
    """Run the whole method (module docstring) and write ``<out>/checkpoint.pt``; returns a summary."""
    cfg = (cfg or InstanceConfig()).check()
    t0 = time.perf_counter()
    gen = seed_everything(cfg.seed)
    run = load_nerf(nerf_run, device)
    views = load_views(data, "train", device=device)
    from physinv.io.transforms import read_transforms

    image_paths = [f.image_path for f in read_transforms(views.source).frames]
    masks, classes = load_masks(masks_dir, image_paths, views.width, views.height)
    masks = masks.to(device)
    out = Path(out)
    ckpt_path = out / CHECKPOINT_NAME
    resumed = ckpt_path.is_file()

    # 1-2. detection, depth, matching (deterministic; recomputed on resume, cheap next to training)
    depth, opacity = zip(*[nerf_depth_opacity(run, views.c2w[i], views.intrinsics[i], views.width, views.height) for i in range(len(views))])
    depth, opacity = torch.stack(depth), torch.stack(opacity)
    if cfg.direct:
        ids = torch.unique(masks[masks > 0])
        lut = torch.zeros(int(masks.max()) + 1, dtype=torch.long, device=device)
        lut[ids] = torch.arange(1, len(ids) + 1, device=device)
        labels = torch.where(masks > 0, lut[masks], torch.full_like(masks, IGNORE))
        det = {"labels": torch.zeros(1, 1, 1, dtype=torch.long), "boxes": torch.zeros(0, 6), "scores": torch.zeros(0), "classes": torch.zeros(0, dtype=torch.long)}
        num_labels = len(ids) + 1
        projected = torch.zeros_like(masks)
    else:
        model = load_detector(detector, device)
        grid = sample_grid(run.density, run.radiance, run.aabb, detector_grid_shape(run.aabb, model.cfg.grid_res))
        det = detect_instances(model, grid, run.aabb, cfg.score_threshold)
        projected = project_instances(det["labels"], run.aabb, views.c2w, views.intrinsics, views.width, views.height, depth, opacity)
        labels = match_masks(masks, projected, cfg.matching)
        num_labels = len(det["boxes"]) + 1
    if num_labels < 2:
        raise PhysinvError(f"{nerf_run}: NeRF-RCNN found no object in this NeRF (nothing to segment)")
    matched_fraction = float(((labels > 0).sum() / (masks > 0).sum().clamp_min(1)).item())

    field = InstanceField(num_labels, run.geo_feature_dim, run.aabb, InstanceFieldConfig()).to(device)
    opt = torch.optim.Adam(field.parameters(), lr=cfg.lr, eps=1e-15)
    refine_step = int(round(cfg.refine_at * cfg.steps)) if cfg.refine and not cfg.direct else cfg.steps + 1
    state = {"labels": labels, "refined": torch.tensor(0)}

    def refine_now() -> None:
        new = []
        for i in range(len(views)):
            r = render_instance_map(field, run, views.c2w[i], views.intrinsics[i], views.width, views.height)
            lab = refine_labels(r["labels"].cpu().numpy(), views.images[i].cpu().numpy(), depth[i].cpu().numpy(), seed=cfg.seed)
            new.append(torch.as_tensor(lab, device=device))
        state["labels"] = torch.stack(new)
        state["refined"] = torch.tensor(1)

    def step_fn(step: int) -> dict:
        if step == refine_step and not int(state["refined"]):
            refine_now()
        v, rows, cols = _patch_rays(views, cfg.patches, cfg.patch, gen)
        pix = torch.stack([cols, rows], -1).reshape(-1, 2).float() + 0.5
        vi = v[:, None, None].expand_as(rows).reshape(-1)
        o, d = views.rays(vi, pix)
        rendered = render_logits(field, run, o, d)
        target = state["labels"][vi, rows.reshape(-1), cols.reshape(-1)]
        ce = instance_cross_entropy(rendered["logits"], target)
        shape = (cfg.patches, cfg.patch, cfg.patch)
        smooth = depth_weighted_smoothness(rendered["logits"].view(*shape, -1), rendered["depth"].view(shape))
        loss = ce + cfg.smoothness * smooth
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "ce": ce.item(), "smooth": smooth.item()}

    meta = {
        "nerf_run": str(Path(nerf_run).resolve()), "data": str(Path(data).resolve()), "masks": str(Path(masks_dir).resolve()),
        "instance": asdict(cfg), "field": field.describe(), "num_labels": num_labels,
        "boxes": det["boxes"].tolist(), "scores": det["scores"].tolist(), "classes": det["classes"].tolist(),
    }
    result = fit(
        step_fn, run_dir=out, steps=cfg.steps, state={"field": field, "optimizer": opt}, max_minutes=max_minutes,
        checkpoint_every=200, log_every=25, config=meta, desc="instance field", quiet=quiet,
        extra_state=lambda: {"labels": state["labels"].to(torch.int16).cpu(), "refined": state["refined"], "grid": det["labels"].to(torch.int16).cpu()},
        load_extra_state=lambda e: state.update(labels=e["labels"].long().to(device), refined=e["refined"]),
    )
    if cfg.refine and not cfg.direct and not int(state["refined"]) and result.stopped_by == "steps":
        refine_now()  # a run too short to reach refinement still records its refined maps
    return {
        "instances": num_labels - 1, "matched_fraction": round(matched_fraction, 4), "steps": result.step,
        "stopped_by": result.stopped_by, "resumed": resumed, "seconds": round(time.perf_counter() - t0, 1), "out": str(out),
    }


# ----------------------------------------------------------------------------------------------
# a trained instance run


@dataclass
class InstanceRun:
    field: InstanceField
    nerf: object
    meta: dict
    grid_labels: Tensor  # (X, Y, Z) NeRF-RCNN's 3D masks
    run_dir: Path

    @torch.no_grad()
    def query(self, points: Tensor, min_density: float | None = None) -> tuple[Tensor, Tensor]:
        """Instance id (N,) int64 and its probability (N,) at world points (N, 3). Points where the
        NeRF's density is below ``min_density`` (default: half-opaque over a 1/128 of the box) are
        background (id 0, probability 1): the field is only defined where the NeRF has matter."""
        pts = points.to(self.field.aabb.device).float()
        if min_density is None:
            min_density = math.log(2.0) / (float((self.field.aabb[1] - self.field.aabb[0]).max()) / 128)
        nerf = self.nerf.geometry(pts)
        sigma = nerf["sigma"]
        prob = self.field(pts, nerf["geo_feature"]).softmax(-1)
        p, lab = prob.max(-1)
        empty = sigma < min_density
        return torch.where(empty, torch.zeros_like(lab), lab), torch.where(empty, torch.ones_like(p), p)

    def render(self, c2w: Tensor, intrinsics: Tensor, width: int, height: int) -> dict[str, Tensor]:
        return render_instance_map(self.field, self.nerf, c2w, intrinsics, width, height)


def load_instance_run(run_dir: str | Path, device: str | torch.device = "cpu") -> InstanceRun:
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location=device)
    meta = ckpt.get("config", {})
    if "field" not in meta or "field" not in ckpt.get("state", {}):
        raise input_error(run_dir / CHECKPOINT_NAME, "config.field", "not a physinv instance run")
    nerf = load_nerf(meta["nerf_run"], device)
    fcfg = {k: v for k, v in meta["field"].items() if k in {f.name for f in fields(InstanceFieldConfig)}}
    field = InstanceField(int(meta["field"]["num_labels"]), int(meta["field"]["geo_dim"]), nerf.aabb, InstanceFieldConfig(**fcfg)).to(device)
    field.load_state_dict(ckpt["state"]["field"])
    field.eval()
    grid = ckpt.get("extra", {}).get("grid", torch.zeros(1, 1, 1)).long().to(device)
    return InstanceRun(field, nerf, meta, grid, run_dir)


@torch.no_grad()
def evaluate_instance(run_dir: str | Path, data: str | Path | None = None, split: str = "test", device="cpu") -> dict:
    """Render every view of ``split`` and score the instance maps against its ground-truth
    ``instance`` maps: ``pq`` (per view, averaged), ``pq_scene`` (ids must agree across views),
    ``miou`` (Hungarian-matched per view, averaged) and ``miou_scene`` (matched over all views)."""
    run = load_instance_run(run_dir, device)
    data = Path(data) if data is not None else Path(run.meta["data"])
    views = load_views(data, split, device=device, maps=("instance",))
    gt = views.maps["instance"]
    pred = torch.stack([run.render(views.c2w[i], views.intrinsics[i], views.width, views.height)["labels"] for i in range(len(views))])
    return {"split": split, "views": len(views), **instance_scores(pred, gt), "instances": int(run.meta["num_labels"]) - 1}


def masks_metrics(masks_dir: str | Path, data: str | Path, split: str = "test") -> dict:
    """The same scores for a masks folder (e.g. the noisy segmenter on the test views)."""
    views = load_views(data, split, maps=("instance",))
    from physinv.io.transforms import read_transforms

    masks, _ = load_masks(masks_dir, [f.image_path for f in read_transforms(views.source).frames], views.width, views.height)
    return instance_scores(masks, views.maps["instance"])

