"""Fit PhySG to posed, masked images under one unknown illumination, through ``core.train.fit``.

Loss per step (PhySG's reference code): L1 between rendered and observed colour, averaged over the
rays that hit the surface inside the object mask (IDR divides the sum by the batch size instead),
+ 0.1 x eikonal loss on the hit points and as many uniform points in the bounding cube, + 100 x
IDR's mask loss with the sharpening alpha, + 1.0 x PhySG's normal smoothness: rays come in 2 x 2
pixel patches and the variance of the normals inside each patch that lies wholly on the object is
penalised (``core.sdf.normal_smoothness_loss``; it keeps the surface from taking up the texture).
8-bit images are sRGB: the rendered linear radiance goes through the sRGB curve before the loss;
HDR images are compared linearly. Learning rate: Adam, halved at 1/2 and 3/4 of the run (IDR's
milestones 1000/1500 of 2000 epochs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from physinv.core import sdf
from physinv.core.metrics import mse_to_psnr
from physinv.core.train import CHECKPOINT_NAME, FitResult, fit, load_checkpoint, seed_everything
from physinv.errors import input_error
from physinv.io.images import linear_to_srgb
from physinv.relight.config import PATCH, RelightConfig, resolve
from physinv.relight.data import load_relight_views
from physinv.relight.physg import PhysgModel


@dataclass
class RelightTrainResult:
    fit: FitResult
    config: RelightConfig
    train_psnr: float | None
    kept_step: int | None = None  # NeRD with val_fraction > 0: the step of the model early stopping kept
    roughness_restart_step: int | None = None  # NeRD with restart_roughness: the step its roughness output restarted at


def build_model(cfg: RelightConfig, light_sets: int = 1):
    """The model of a resolved config: PhySG, or NeRD with ``light_sets`` illuminations (weights to be loaded)."""
    if cfg.method == "nerd":
        from physinv.relight.nerd_fit import build_nerd

        return build_nerd(cfg, light_sets)
    return PhysgModel(
        lobes=cfg.lobes, sdf_width=cfg.sdf_width, sdf_depth=cfg.sdf_depth, sdf_skips=tuple(cfg.sdf_skips), sdf_freqs=cfg.sdf_freqs,
        albedo_width=cfg.albedo_width, albedo_depth=cfg.albedo_depth, albedo_freqs=cfg.albedo_freqs, init_radius=cfg.init_radius,
        roughness=cfg.roughness, specular_albedo=cfg.specular_albedo, seed=cfg.seed, trace_samples=cfg.trace_samples,
    )


def to_display(linear: torch.Tensor, is_linear: bool) -> torch.Tensor:
    """Rendered linear radiance -> the images' encoding (sRGB curve for 8-bit data, identity for HDR)."""
    return linear if is_linear else linear_to_srgb(linear)


def train(data_dir: str | Path, run_dir: str | Path, config: RelightConfig, device: torch.device | str = "cpu", max_minutes: float | None = None, quiet: bool = False) -> RelightTrainResult:
    """Fit (or resume) a PhySG (or NeRD: ``relight.nerd_fit``) model on ``data_dir``'s train split into ``run_dir``."""
    device = torch.device(device)
    run_dir = Path(run_dir)
    cfg = resolve(config)
    ckpt_path = run_dir / CHECKPOINT_NAME
    saved = load_checkpoint(ckpt_path)["config"] if ckpt_path.is_file() else None
    if saved is not None and saved.get("relight", {}).get("method") != cfg.method:
        raise input_error(ckpt_path, "config.relight.method", f"the run was fitted with --method {saved.get('relight', {}).get('method')}, not {cfg.method} (use another --out)")
    if cfg.method == "nerd":
        from physinv.relight.nerd_fit import train_nerd

        return train_nerd(data_dir, run_dir, cfg, device, max_minutes, quiet)
    gen = seed_everything(cfg.seed)
    rv = load_relight_views(data_dir, "train", device)
    names = sorted({n for n in rv.views.lights if n is not None})
    if len(names) > 1:
        raise input_error(rv.views.source, "frames[].light", f"PhySG assumes one illumination, but the frames name {len(names)} lights ({', '.join(names[:4])}...)")
    views = rv.views
    n_views, h, w = views.images.shape[:3]
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[max(1, cfg.steps // 2), max(2, 3 * cfg.steps // 4)], gamma=0.5)

    patch = PATCH if cfg.normal_smooth_weight > 0 else 1
    if h < patch or w < patch:
        raise input_error(rv.views.source, "w/h", f"images of {w} x {h} pixels are smaller than the {patch} x {patch} patches of the normal smoothness")
    per_patch, ph, pw = patch * patch, h - patch + 1, w - patch + 1  # patch corners: ph x pw per view
    offsets = torch.stack(torch.meshgrid(torch.arange(patch), torch.arange(patch), indexing="ij"), -1).reshape(-1, 2).to(device)  # (K, 2) dv, du

    def step_fn(step: int) -> dict[str, float]:
        # patches of patch x patch pixels (single pixels when patch = 1), anywhere in any view
        flat = torch.randint(0, n_views * ph * pw, (cfg.batch_rays // per_patch,), generator=gen).to(device)
        view, pix = flat // (ph * pw), flat % (ph * pw)
        v = ((pix // pw)[:, None] + offsets[:, 0]).reshape(-1)
        u = ((pix % pw)[:, None] + offsets[:, 1]).reshape(-1)
        view = view.repeat_interleave(per_patch)
        o, d = views.rays(view, torch.stack([u, v], -1).float() + 0.5)
        target, mask = views.images[view, v, u], rv.masks[view, v, u]
        out = model.render_rays(o, d)
        pred = to_display(out["rgb"], rv.linear)
        on = out["hit"] & (mask > 0.5)
        rgb_loss = (pred[on] - target[on]).abs().mean() if on.any() else pred.sum() * 0.0
        alpha = sdf.mask_alpha(step, cfg.steps, cfg.mask_alpha)
        m_loss = sdf.mask_loss(out["min_sdf"], mask, out["hit"], alpha)
        uniform = torch.rand(v.shape[0], 3, generator=gen).to(device) * 2.0 - 1.0
        _, grad_uniform = sdf.sdf_gradient(model.sdf, uniform)
        eik = sdf.eikonal_loss(torch.cat([out["sdf_grad"], grad_uniform]))
        smooth = sdf.normal_smoothness_loss(out["normal"].reshape(-1, per_patch, 3), on.reshape(-1, per_patch).all(-1)) if patch > 1 else eik * 0.0
        loss = rgb_loss + cfg.eikonal_weight * eik + cfg.mask_weight * m_loss + cfg.normal_smooth_weight * smooth
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            mse = (pred[on] - target[on]).square().mean() if on.any() else torch.tensor(float("nan"))
        return {
            "loss": float(loss.detach()), "psnr": float(mse_to_psnr(mse)), "rgb_l1": float(rgb_loss.detach()),
            "eikonal": float(eik.detach()), "mask": float(m_loss.detach()), "normal_smooth": float(smooth.detach()), "hit_fraction": float(out["hit"].float().mean()),
            "roughness": float(model.roughness.detach()), "specular": float(model.specular_albedo.detach()),
        }

    ckpt_config = {**rv.run_config(cfg, data_dir), "light_name": names[0] if names else None}
    result = fit(
        step_fn,
        run_dir=run_dir,
        steps=cfg.steps,
        state={"model": model, "optimizer": optimizer, "scheduler": scheduler},
        max_minutes=max_minutes,
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        config=ckpt_config,
        desc=f"relight/{cfg.method}",
        quiet=quiet,
    )
    (run_dir / "config.json").write_text(json.dumps(ckpt_config, indent=2) + "\n")
    return RelightTrainResult(result, cfg, result.last.get("psnr"))
