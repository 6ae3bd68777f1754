"""Fit NeRD (``relight.nerd``) to posed, masked photos under varying light, through ``core.train.fit``.

One training image per step (reference): ``batch_rays`` random pixels of it, its illumination set
and exposure; losses and schedule in ``relight.nerd``'s docstring (note 6). With ``val_fraction`` > 0
(the hash-grid variant's default) that share of the training pixels is held out and the model with
the best PSNR on them is kept (``core.train.KeptWeights``, in the checkpoint's ``extra.kept``), as
the NeRF's early stopping (``physinv.nerf.train``).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from physinv.core import sg
from physinv.core.encoding import HashGridEncoding
from physinv.core.metrics import mse_to_psnr
from physinv.core.train import CHECKPOINT_NAME, KeptWeights, RunProgress, fit, load_checkpoint, seed_everything
from physinv.errors import input_error
from physinv.io.dataset import light_sets
from physinv.nerf.train import RayBatch, holdout_pixels, step_off_held_out
from physinv.relight.config import RelightConfig
from physinv.relight.data import load_relight_views
from physinv.relight.nerd import (
    WB_GREY,
    NerdModel,
    NerdShape,
    composite_display,
    ev100_to_exposure,
    exif_ev100,
    mask_loss,
    mean_light,
    rendered_display,
    white_balance_,
)

PAPER_STEPS = 300_000  # the reference's 300 epochs x 1000 steps
RESTART_ROUGHNESS = 0.5  # where the roughness output restarts when annealing begins (RelightConfig.restart_roughness)


def build_nerd(cfg: RelightConfig, sets: int, mean: sg.SGLight | None = None) -> NerdModel:
    """The model of a resolved NeRD config with ``sets`` illuminations (``mean``: their start; a
    placeholder when a checkpoint will overwrite it)."""
    if mean is None:
        k = cfg.lobes
        mean = sg.SGLight(sg.fibonacci_sphere(k), torch.ones(k, 1), torch.ones(k, 3))
    if cfg.encoding == "hashgrid" and cfg.hash_finest_resolution is None:
        raise ValueError("build_nerd: hash_finest_resolution is unset (train_nerd sets it from the images; a run's config has it)")
    shape = NerdShape(cfg.net_width, cfg.net_depth, cfg.pos_freqs, cfg.coarse_samples, cfg.fine_samples, cfg.encoding, cfg.hash_levels,
                      cfg.hash_features, cfg.log2_table_size, cfg.hash_base_resolution, cfg.hash_finest_resolution)
    return NerdModel(shape, cfg.lobes, sets, mean, cfg.condense_features, cfg.brdf_latent, cfg.min_roughness)


def nerd_optimizer(model: NerdModel, cfg: RelightConfig) -> torch.optim.Adam:
    """Adam at ``lr`` (reference); with hash-grid trunks their tables in a group of their own at
    ``hash_lr`` with instant-ngp's betas (0.9, 0.99) and eps 1e-15 (the tables' gradients are tiny)."""
    tables = [p for m in model.modules() if isinstance(m, HashGridEncoding) for p in m.tables]
    if not tables:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ids = {id(p) for p in tables}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.Adam([{"params": rest, "lr": cfg.lr, "base_lr": cfg.lr},
                             {"params": tables, "lr": cfg.hash_lr, "base_lr": cfg.hash_lr, "betas": (0.9, 0.99), "eps": 1e-15}], lr=cfg.lr)


def frame_exposures(extras: list[dict], source) -> list[float]:
    """Per-frame exposure factor: from ``ev100``, else EXIF ``f_number`` / ``exposure_time`` / ``iso``, else 1."""
    out = []
    for i, e in enumerate(extras):
        try:
            if "ev100" in e:
                ev = float(e["ev100"])
            elif all(k in e for k in ("f_number", "exposure_time", "iso")):
                ev = exif_ev100(float(e["f_number"]), float(e["exposure_time"]), float(e["iso"]))
            else:
                out.append(1.0)
                continue
        except (TypeError, ValueError, ZeroDivisionError):
            raise input_error(source, f"frames[{i}].ev100", "expected a number (or positive f_number, exposure_time, iso)") from None
        if not torch.isfinite(torch.tensor(ev)):
            raise input_error(source, f"frames[{i}].ev100", f"not finite ({ev})")
        out.append(ev100_to_exposure(ev))
    return out


def schedule(fraction: float, paper_steps: float = PAPER_STEPS, anneal_fraction: float = 0.0, anneal_lr_factor: float = 0.01) -> dict[str, float]:
    """The reference's schedule at the paper step s = ``paper_steps`` x ``fraction`` of the run (note 6);
    over the run's last ``anneal_fraction`` the learning rate also decays exponentially to
    ``anneal_lr_factor`` x (the hash-grid variant's annealing, ``RelightConfig``)."""
    s = paper_steps * fraction
    lr_factor = 0.1 ** (s / 250_000)
    if anneal_fraction > 0:
        lr_factor *= anneal_lr_factor ** (max(0.0, fraction - (1.0 - anneal_fraction)) / anneal_fraction)
    return {"lr_factor": lr_factor, "colour": 0.75 ** (s / 1500), "advanced": 0.9 ** (s / 5000), "first_phase": float(s < 1000)}


def train_nerd(data_dir: str | Path, run_dir: str | Path, cfg: RelightConfig, device: torch.device, max_minutes: float | None = None, quiet: bool = False):
    """Fit (or resume) NeRD on ``data_dir``'s train split into ``run_dir``; returns ``RelightTrainResult``."""
    from physinv.relight.train import RelightTrainResult

    run_dir = Path(run_dir)
    seed_everything(cfg.seed)  # draws come from torch's global generator, which every checkpoint saves: a resumed run draws what the uninterrupted one would
    rv = load_relight_views(data_dir, "train", device)
    views = rv.views
    n_views, h, w = views.images.shape[:3]
    if cfg.encoding == "hashgrid" and cfg.hash_finest_resolution is None:
        cfg = replace(cfg, hash_finest_resolution=max(2 * max(h, w), cfg.hash_base_resolution))  # about two cells per pixel across the box
    frame_set, set_names = light_sets(list(views.lights))
    exposures = frame_exposures(views.frames_extras, views.source)
    wb_ref = 0
    wb_value = views.frames_extras[wb_ref].get("white_balance", [WB_GREY] * 3)
    if not (isinstance(wb_value, list) and len(wb_value) == 3 and all(isinstance(v, (int, float)) and v > 0 for v in wb_value)):
        raise input_error(views.source, f"frames[{wb_ref}].white_balance", f"expected three positive numbers, got {wb_value!r}")
    ckpt_path = run_dir / CHECKPOINT_NAME
    mean = None if ckpt_path.is_file() else mean_light(cfg.lobes, views.envmap_to_world, device)
    model = build_nerd(cfg, len(set_names), mean).to(device)
    optimizer = nerd_optimizer(model, cfg)
    progress = RunProgress()
    frame_set_t = torch.tensor(frame_set)
    wb_target = torch.tensor(wb_value, dtype=torch.float32, device=device)
    pixels = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2)
    exclude = kept = None
    if cfg.val_fraction > 0:  # early stopping on training pixels never trained on
        n_val = max(1, min(cfg.eval_rays, round(cfg.val_fraction * n_views * h * w)))
        exclude, val_rays = holdout_pixels(views, n_val, torch.Generator(device=device).manual_seed(cfg.seed + 2))
        kept = KeptWeights(model)
    restart = {"step": None}  # the step the roughness output restarted at (RelightConfig.restart_roughness)
    exposure_t = torch.tensor(exposures, dtype=torch.float32, device=device)
    frame_set_on_device = frame_set_t.to(device)

    @torch.no_grad()
    def display_of(rays: RayBatch, chunk: int = 1024) -> torch.Tensor:
        """The decomposition pass's pixels (R, 3) of ``rays``, each under its frame's learnt light and exposure."""
        pred = torch.empty_like(rays.colors)
        sets = frame_set_on_device[rays.view]
        for k in sets.unique().tolist():
            for idx in (sets == k).nonzero().squeeze(1).split(chunk):
                out = model.render_rays(rays.origins[idx], rays.dirs[idx], light=model.light(k), differentiable=False, perturb=False)
                pred[idx] = rendered_display(out, exposure_t[rays.view[idx], None], views.background, rv.linear)
        return pred

    def eval_fn(step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        val_psnr = float(mse_to_psnr((display_of(val_rays) - val_rays.colors).square().mean()))
        kept.update(val_psnr, step)
        return {"val_psnr": val_psnr, "kept_step": kept.step, "eval_seconds": time.perf_counter() - t0}

    def step_fn(step: int) -> dict[str, float]:
        fraction = progress.fraction(step)
        sched = schedule(fraction, cfg.schedule_paper_steps, cfg.anneal_fraction, cfg.anneal_lr_factor)
        if cfg.restart_roughness and restart["step"] is None and fraction >= 1.0 - cfg.anneal_fraction:
            model.fine.brdf.restart_roughness_(optimizer, RESTART_ROUGHNESS)
            restart["step"] = step
        for group in optimizer.param_groups:
            group["lr"] = group.get("base_lr", cfg.lr) * sched["lr_factor"]
        view = int(torch.randint(0, n_views, (1,)))
        light_index = int(frame_set_t[view])
        pix = pixels[torch.randint(0, h * w, (cfg.batch_rays,))]
        v, u = pix[:, 0].to(device), pix[:, 1].to(device)
        if exclude is not None:
            u = step_off_held_out(exclude, torch.full_like(u, view), v, u, w)
        o, d = views.rays(view, torch.stack([u, v], -1).float() + 0.5)
        target, mask = views.images[view, v, u], rv.masks[view, v, u]
        # white balance (no gradient): unclipped in the first phase, every illumination brought to grey
        first = sched["first_phase"] > 0
        probe_dir = views.c2w[view, :3, 3]
        if view == wb_ref:
            white_balance_(model.lights, light_index, wb_target, probe_dir, exposures[view], None if first else (0.99, 1.01))
        elif first:
            white_balance_(model.lights, light_index, torch.full((3,), WB_GREY, device=device), probe_dir, exposures[view], None, grayscale=True)
        light = model.light(light_index)
        out = model.render_rays(o, d, light=light, differentiable=True, perturb=True)
        bg = views.background
        pred = rendered_display(out, exposures[view], bg, rv.linear)
        coarse = composite_display(out["coarse_rgb"], out["coarse_opacity"], bg)
        direct = composite_display(out["direct_rgb"], out["opacity"], bg)
        mse = (pred - target).square().mean()
        coarse_mse = (coarse - target).square().mean()
        direct_mse = (direct - target).square().mean()
        ramp = 1.0 - sched["advanced"]
        loss = coarse_mse + mse * max(1.0 - sched["colour"], 0.01) + direct_mse * sched["colour"] + model.fine.brdf.latent_penalty(cfg.latent_l2)
        if cfg.mask_loss:
            fine_per_ray = cfg.coarse_samples + cfg.fine_samples
            loss = loss + ramp * (0.4 * mask_loss(out["coarse_alpha"], out["coarse_opacity"], mask, cfg.batch_rays, cfg.coarse_samples)
                                  + mask_loss(out["fine_alpha"], out["opacity"], mask, cfg.batch_rays, fine_per_ray))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return {
            "loss": float(loss.detach()), "psnr": float(mse_to_psnr(mse.detach())), "psnr_coarse": float(mse_to_psnr(coarse_mse.detach())),
            "psnr_direct": float(mse_to_psnr(direct_mse.detach())), "colour_blend": sched["colour"], "mask_ramp": ramp,
            "roughness": float(out["roughness"].detach()[out["hit"]].mean()) if out["hit"].any() else float("nan"),
        }

    def extra_state() -> dict:
        return {"roughness_restart": restart["step"], **({"kept": kept.state_dict()} if kept is not None else {})}

    def load_extra_state(extra: dict) -> None:
        restart["step"] = extra.get("roughness_restart")
        if kept is not None and "kept" in extra:
            kept.load_state_dict(extra["kept"])

    ckpt_config = {**rv.run_config(cfg, data_dir), "light_name": set_names[0], "light_sets": set_names, "frame_light": frame_set}
    if ckpt_path.is_file():
        saved = load_checkpoint(ckpt_path)["config"]
        if saved.get("light_sets") != set_names:
            raise input_error(ckpt_path, "config.light_sets", "the data's lights differ from the run's (use another --out)")
    result = fit(
        step_fn,
        run_dir=run_dir,
        steps=cfg.steps,
        state={"model": model, "optimizer": optimizer},
        max_minutes=max_minutes,
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        config=ckpt_config,
        desc="relight/nerd",
        quiet=quiet,
        progress=progress,
        eval_fn=eval_fn if kept is not None else None,
        eval_every=cfg.eval_every,
        extra_state=extra_state,
        load_extra_state=load_extra_state,
    )
    (run_dir / "config.json").write_text(json.dumps(ckpt_config, indent=2) + "\n")
    return RelightTrainResult(result, cfg, result.last.get("psnr"), kept.step if kept is not None else None, restart["step"])
