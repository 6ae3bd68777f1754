"""Training of the three NeRF methods through :func:`physinv.core.train.fit`.

Rays are drawn uniformly over all pixels of all training views each step (NeRF's batching; during
the first ``precrop_steps`` from the central crops only), the
loss is the MSE of the rendered colour composited on the data set's background (plus the coarse
colour's MSE for ``nerf``), and the PSNR curve is measured on a fixed set of held-out rays from
the test split (the training split when there is none).

Early stopping (``val_fraction`` > 0, the default of ``ngp`` and ``plain``): that share of the
training pixels (at most ``eval_rays``) is never trained on; at every evaluation their PSNR decides
whether the model is the best so far, and the best one is kept (:class:`~physinv.core.train.KeptWeights`,
in the checkpoint beside the last step's state, which a resumed run continues from). Inference
(:func:`physinv.nerf.api.load_run`) loads the kept model, so training longer never hands a user a
worse one. The test split is never used for that choice.

Appearance embedding (``appearance_dim`` > 0): each training ray renders with the code of its view's
illumination (``RayBatch.view`` -> code, a table built once); the held-out test rays with the code of
their view's light when the run was trained under it, else the mean code (:func:`appearance_index`).
The light name of each code is saved in the checkpoint (``appearance_lights``) so that a run
evaluated on another data folder maps names to the same codes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from physinv.config import config_to_dict
from physinv.core.camera import look_at_point
from physinv.core.metrics import mse_to_psnr
from physinv.core.train import CHECKPOINT_NAME, LOG_NAME, FitResult, JsonlLog, KeptWeights, RunProgress, fit, load_checkpoint, seed_everything
from physinv.core.volume import PER_SAMPLE_KEYS
from physinv.errors import input_error
from physinv.io.dataset import ViewSet, light_sets, load_views
from physinv.nerf.config import NerfConfig, resolve
from physinv.nerf.models import build_model
from physinv.nerf.optim import InstantNGPAdam


def scene_aabb(views: ViewSet) -> Tensor:
    """The data set's ``aabb`` (2, 3), else a cube around the point the cameras look at.

    Without a box: the centre is the least-squares point closest to all optical axes and the half
    size half the median camera distance to it (objects filling the frame from an orbit).
    """
    if views.aabb is not None:
        return views.aabb.float()
    o = views.c2w[:, :3, 3].double()
    centre = look_at_point(views.c2w.double())
    half = 0.5 * torch.linalg.norm(o - centre, dim=-1).median()
    return torch.stack([centre - half, centre + half]).float()


def appearance_index(lights: list[str | None], code_lights: list[str | None]) -> list[int]:
    """The appearance code (-1: the mean code) of views under ``lights`` for a run whose codes are
    ``code_lights`` (:func:`~physinv.io.dataset.light_sets`'s names, None for a training frame's own
    code): a light the run was trained under gets its code; an unseen one, or a view without a
    ``light``, the mean of all codes (no code of the run belongs to it)."""
    named = {name: i for i, name in enumerate(code_lights) if name is not None}
    return [named.get(light, -1) if light is not None else -1 for light in lights]


class RayBatch(NamedTuple):
    """Rays through pixel centres: origins (n, 3), unit dirs (n, 3), pixel colours (n, 3) and the
    index (n,) of the view each one comes from (e.g. to look up a per-view code)."""

    origins: Tensor
    dirs: Tensor
    colors: Tensor
    view: Tensor


def sample_rays(views: ViewSet, n: int, generator: torch.Generator | None = None, crop: float = 1.0, exclude: Tensor | None = None) -> RayBatch:
    """``n`` random pixel-centre rays of random views.

    The indices are drawn on the images' device (from ``generator``, which must live there, or
    the device's global generator), so a training step does not wait for the host.
    ``crop`` < 1 draws the pixels from the central ``crop * H`` x ``crop * W`` window only.
    ``exclude`` (N, H, W) bool, from :func:`holdout_pixels`: pixels never drawn; a draw that lands
    on one takes its right-hand neighbour instead (its left one at the window's edge), which is
    never excluded because held-out pixels sit in even columns only. That costs one gather and no
    host synchronisation, and biases the draw by the held-out share (1 %) at most.
    """
    device = views.images.device
    N, H, W = views.images.shape[:3]
    h, w = max(1, round(H * crop)), max(1, round(W * crop))
    flat = torch.randint(0, N * h * w, (n,), generator=generator, device=device)
    view, pix = flat // (h * w), flat % (h * w)
    v, u = pix // w + (H - h) // 2, pix % w + (W - w) // 2
    if exclude is not None:
        u = step_off_held_out(exclude, view, v, u, (W - w) // 2 + w)
    return _pixel_rays(views, view, v, u)


def step_off_held_out(exclude: Tensor, view: Tensor, v: Tensor, u: Tensor, width: int) -> Tensor:
    """Columns ``u`` (n,) of drawn pixels (``view``, ``v``, ``u``) with every draw that landed on a
    held-out pixel of ``exclude`` (N, H, W) moved to its right-hand neighbour (its left one when
    that would reach column ``width``). Held-out pixels sit in even columns only
    (:func:`holdout_pixels`), so the neighbour never is one."""
    right = torch.where(u + 1 < width, 1, -1)
    return u + exclude[view, v, u] * right


def _pixel_rays(views: ViewSet, view: Tensor, v: Tensor, u: Tensor) -> RayBatch:
    """The rays through the centres of pixels (u, v) (column, row; (n,) each) of views ``view`` (n,)."""
    pixels = torch.stack([u, v], -1).float() + 0.5
    o, d = views.rays(view, pixels)
    return RayBatch(o, d, views.images[view, v, u], view)


def holdout_pixels(views: ViewSet, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, RayBatch]:
    """About ``n`` training pixels set aside for validation, at random among those in even columns
    (so that :func:`sample_rays` can step off them to a neighbour): a mask (N, H, W) bool for
    :func:`sample_rays`'s ``exclude`` and their rays. Fewer than ``n`` on tiny data (duplicate draws)."""
    device = views.images.device
    N, H, W = views.images.shape[:3]
    half = (W + 1) // 2  # even columns per row
    draws = torch.randint(0, N * H * half, (2 * n,), generator=generator, device=device).unique()
    order = torch.randperm(len(draws), generator=generator, device=device)[:n]
    flat = draws[order]
    view, rest = flat // (H * half), flat % (H * half)
    v, u = rest // half, 2 * (rest % half)
    mask = torch.zeros((N, H, W), dtype=torch.bool, device=device)
    mask[view, v, u] = True
    return mask, _pixel_rays(views, view, v, u)


@torch.no_grad()
def render_rays_chunked(model: torch.nn.Module, origins: Tensor, dirs: Tensor, background: Tensor, chunk: int = 8192, ray_codes: Tensor | None = None, **kwargs) -> dict[str, Tensor]:
    """Render many rays in chunks without gradients; keeps every per-ray output (rgb (R, 3), depth
    (R,), opacity (R,), ``rgb_coarse``, extra features, ...). The per-sample outputs (``samples``,
    ``weights``, ``transmittance``) are dropped: ``ray_samples`` is the API for those.
    ``ray_codes`` (R, C): per-ray appearance codes, split with the rays. ``kwargs`` go to
    ``model.render_rays`` (e.g. ``extra_features``)."""
    parts: dict[str, list[Tensor]] = {}
    codes = [None] * len(origins.split(chunk)) if ray_codes is None else ray_codes.split(chunk)
    for o, d, c in zip(origins.split(chunk), dirs.split(chunk), codes):
        out = model.render_rays(o, d, background, perturb=False, **kwargs, **({} if c is None else {"ray_codes": c}))
        for k, v in out.items():
            if k not in PER_SAMPLE_KEYS:
                parts.setdefault(k, []).append(v)
    if not parts:
        return {"rgb": origins.new_zeros((0, 3)), "depth": origins.new_zeros((0,)), "opacity": origins.new_zeros((0,))}
    return {k: torch.cat(v) for k, v in parts.items()}


def eval_curve(log: list[dict], kept: bool = True) -> list[tuple[float, float, int]]:
    """(training seconds without the evaluations so far, held-out PSNR in dB, step) for every
    evaluation record of a run's log (``JsonlLog(<run>/log.jsonl).read()``). ``kept``: the PSNR of
    the model a user would get at that point (the one early stopping keeps, where the run validates;
    ``False``: the last step's weights)."""
    out, eval_total = [], 0.0
    for rec in log:
        if rec.get("eval"):
            eval_total += rec.get("eval_seconds", 0.0)
            value = rec.get("kept_eval_psnr", rec["eval_psnr"]) if kept else rec["eval_psnr"]
            out.append((rec["time_s"] - eval_total, value, rec["step"]))
    return out


def build_optimizer(model: torch.nn.Module, cfg: NerfConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.method`` (``cfg`` resolved).

    nerf: Adam(lr) as the paper. ngp/plain: Adam betas (0.9, 0.99), eps 1e-15 (instant-ngp) with
    groups: MLP weight matrices (L2 ``mlp_weight_decay``), other MLP parameters (and the appearance codes), one per hash-table
    level (L2 ``hash_decay``'s share, 0 by default). With ``sparse_grad`` the tables are updated
    lazily by :class:`InstantNGPAdam` (entries with a zero gradient skipped, as instant-ngp does),
    else everything by dense ``torch.optim.Adam``.
    """
    if cfg.method == "nerf":
        return _adam(model.parameters(), lr=cfg.lr)
    tables = list(model.field.encoding.parameters())
    table_ids = {id(p) for p in tables}
    others = [p for p in model.parameters() if id(p) not in table_ids]
    codes = {id(p) for p in model.field.appearance.parameters()} if model.field.appearance is not None else set()
    weights = [p for p in others if p.dim() >= 2 and id(p) not in codes]
    rest = [p for p in others if p.dim() < 2 or id(p) in codes]  # appearance codes: no L2 (NeRF-W has none)
    wd = float(cfg.mlp_weight_decay or 0.0)
    groups = [{"params": weights, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    if cfg.hash_decay:
        # Zip-NeRF's normalised hash decay, hash_decay * mean over levels of mean(V_l^2), as L2 in
        # Adam: d/dV_l = 2 * hash_decay / (levels * V_l.numel()) * V_l, one group per level
        groups += [{"params": [t], "weight_decay": 2.0 * cfg.hash_decay / (len(tables) * t.numel())} for t in tables]
    else:  # one group, the layout of the checkpoints written before hash_decay existed
        groups.append({"params": tables, "weight_decay": 0.0})
    if cfg.sparse_grad:
        for group in groups[2:]:
            group["sparse"] = True
        return InstantNGPAdam(groups, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)
    return _adam(groups, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)


def _adam(params, **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam`` with its fused kernel (one pass over each tensor: the Adam phase of an ngp
    step on a CPU, 9.5 M hash-table entries, is 3.7x faster than with the default implementation,
    benchmarks/RESULTS.md), falling back to the default where the installed torch has no fused Adam."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kwargs)


def lr_scheduler(optimizer: torch.optim.Optimizer, cfg: NerfConfig, progress: RunProgress) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of ``cfg`` (resolved), stepped once per training step.

    ``steps``: ``lr * 0.1^(step / lr_decay_steps)`` (NeRF's exponential decay). ``run``:
    ``lr * lr_final_fraction^f`` with ``f`` the share of the run done (:class:`~physinv.core.train.RunProgress`:
    steps or training time, whichever budget ends first), so a run of any length ends at the small
    rate, as instant-ngp's and nerfacc's step schedules do for their fixed step counts.
    """
    if cfg.lr_schedule == "steps":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.1 ** (1.0 / cfg.lr_decay_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cfg.lr_final_fraction ** progress.fraction(step))


@dataclass
class TrainResult:
    """What :func:`fit` returned, the resolved configuration and the last held-out PSNR (dB) logged
    (of the kept model, where the run validates)."""

    fit: FitResult
    config: NerfConfig
    eval_psnr: float | None
    kept_step: int | None = None  # the step of the model early stopping kept (None: the run does not validate)


def checkpoint_config(run_dir: Path) -> dict | None:
    """The ``config`` saved in ``<run>/checkpoint.pt``, or None when there is no checkpoint."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return load_checkpoint(path)["config"]


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    config: NerfConfig,
    device: torch.device | str = "cpu",
    max_minutes: float | None = None,
    quiet: bool = False,
) -> TrainResult:
    """Train ``config.method`` on ``data_dir`` into ``run_dir`` (resuming a checkpoint there)."""
    device = torch.device(device)
    run_dir = Path(run_dir)
    cfg = resolve(config, device)
    saved = checkpoint_config(run_dir)
    if saved is not None and saved.get("nerf", {}).get("method") != cfg.method:
        raise input_error(run_dir / CHECKPOINT_NAME, "config.nerf.method", f"the run was trained with --method {saved.get('nerf', {}).get('method')}, not {cfg.method} (use another --out)")
    seed_everything(cfg.seed)
    views = load_views(data_dir, "train", device=device)
    # the PSNR curve is measured on the test split when there is one, else on training rays
    held_out = load_views(data_dir, "test", device=device) if (Path(data_dir) / "transforms_test.json").is_file() else views
    # appearance embedding: one code per illumination of the training views, as NeRD groups its lights
    frame_codes, code_lights = light_sets(list(views.lights)) if cfg.appearance_dim else ([], [])
    if saved is not None and saved.get("nerf", {}).get("appearance_dim", 0) != cfg.appearance_dim:
        raise input_error(run_dir / CHECKPOINT_NAME, "config.nerf.appearance_dim", f"the run was trained with appearance_dim {saved.get('nerf', {}).get('appearance_dim', 0)}, not {cfg.appearance_dim} (use another --out)")
    if saved is not None and saved.get("appearance_lights", []) != code_lights:
        raise input_error(run_dir / CHECKPOINT_NAME, "config.appearance_lights", "the data's lights differ from the run's appearance codes (use another --out)")
    view_codes = torch.tensor(frame_codes, dtype=torch.long, device=device) if cfg.appearance_dim else None  # (N,) code of each training view
    held_codes = None if view_codes is None else view_codes if held_out is views else torch.tensor(appearance_index(held_out.lights, code_lights), dtype=torch.long, device=device)
    aabb = torch.tensor(saved["aabb"], device=device) if saved is not None else scene_aabb(views).to(device)
    if cfg.render_steps is None:  # about half a pixel per marching step across the box
        cfg = dataclasses.replace(cfg, render_steps=2 * max(views.width, views.height))
    model = build_model(cfg, aabb, len(code_lights)).to(device)
    if hasattr(model, "enable_cuda_speedups"):
        model.enable_cuda_speedups()
    optimizer = build_optimizer(model, cfg)
    progress = RunProgress()
    scheduler = lr_scheduler(optimizer, cfg, progress)
    background = views.background

    exclude, kept = None, None
    if cfg.val_fraction > 0:  # early stopping on training pixels never trained on
        n_val = max(1, min(cfg.eval_rays, round(cfg.val_fraction * views.images[..., 0].numel())))
        exclude, val_rays = holdout_pixels(views, n_val, torch.Generator(device=device).manual_seed(cfg.seed + 2))
        kept = KeptWeights(model)
    eval_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    test_rays = sample_rays(held_out, min(cfg.eval_rays, held_out.images[..., 0].numel()), eval_gen)
    # the same number of fixed training rays: held-out vs training PSNR tells overfitting from noise
    seen_rays = sample_rays(views, min(cfg.eval_rays, views.images[..., 0].numel()), eval_gen, exclude=exclude)

    def ray_codes(table: Tensor | None, view: Tensor) -> dict[str, Tensor]:
        """``render_rays``'s appearance codes of rays from views ``view`` (n,) ({} without an embedding)."""
        return {} if table is None else {"ray_codes": model.appearance_codes(table[view])}

    def psnr_of(rays: RayBatch, codes: Tensor | None = None) -> float:
        rgb = render_rays_chunked(model, rays.origins, rays.dirs, background, cfg.chunk_rays, **ray_codes(codes, rays.view))["rgb"]
        return float(mse_to_psnr(F.mse_loss(rgb, rays.colors)))

    def step_fn(step: int) -> dict[str, Tensor | float]:
        # no host synchronisation: the metrics stay tensors until the loop logs them
        model.train()
        model.update(step)
        crop = cfg.precrop_fraction if step < cfg.precrop_steps else 1.0
        o, d, target, view = sample_rays(views, cfg.batch_rays, crop=crop, exclude=exclude)
        out = model.render_rays(o, d, background, perturb=True, **ray_codes(view_codes, view))
        loss = F.mse_loss(out["rgb"], target)
        metrics = {"psnr": mse_to_psnr(loss.detach()), "samples_per_ray": len(out["samples"]) / cfg.batch_rays}
        if "rgb_coarse" in out:
            loss = loss + F.mse_loss(out["rgb_coarse"], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return {"loss": loss.detach(), **metrics}

    def eval_fn(step: int) -> dict[str, float]:
        # eval_seconds lets a benchmark subtract evaluation from the training clock
        t0 = time.perf_counter()
        model.eval()
        out = {"eval_psnr": psnr_of(test_rays, held_codes), "train_rays_psnr": psnr_of(seen_rays, view_codes)}
        if kept is not None:
            out["val_psnr"] = psnr_of(val_rays, view_codes)
            kept.update(out["val_psnr"], step, eval_psnr=out["eval_psnr"])
            out |= {"kept_step": kept.step, "kept_eval_psnr": kept.info["eval_psnr"]}
        return out | {"eval_seconds": time.perf_counter() - t0}

    ckpt_config = {
        "nerf": config_to_dict(cfg),
        "aabb": aabb.tolist(),
        "background": background.tolist(),
        "width": views.width,
        "height": views.height,
        "data": str(Path(data_dir).resolve()),
        "appearance_lights": code_lights,  # the light name of each appearance code (None: one frame's own)
    }
    result = fit(
        step_fn,
        run_dir=run_dir,
        steps=cfg.steps,
        state={"model": model, "optimizer": optimizer, "scheduler": scheduler},
        max_minutes=max_minutes,
        checkpoint_every=cfg.checkpoint_every,
        eval_fn=eval_fn,
        eval_every=cfg.eval_every,
        config=ckpt_config,
        desc=f"nerf/{cfg.method}",
        quiet=quiet,
        progress=progress,
        extra_state=(lambda: {"kept": kept.state_dict()}) if kept is not None else None,
        load_extra_state=(lambda extra: kept.load_state_dict(extra["kept"]) if "kept" in extra else None) if kept is not None else None,
    )
    curve = eval_curve(JsonlLog(run_dir / LOG_NAME).read())
    return TrainResult(fit=result, config=cfg, eval_psnr=curve[-1][1] if curve else None, kept_step=kept.step if kept is not None else None)
