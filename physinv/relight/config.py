"""Configuration of ``physinv relight fit`` (TOML keys = field names; flags override)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from physinv.errors import PhysinvError

METHODS = ("physg", "nerd")
ENCODINGS = ("frequency", "hashgrid")  # NeRD's trunks (relight.nerd.NerdShape)
HASHGRID_NET_DEPTH = 1  # NeRD's hash-grid trunks: one hidden layer unless net_depth is set (instant-ngp's density MLP)
HASHGRID_VAL_FRACTION = 0.01  # NeRD's hash-grid variant keeps its best model on 1 % of the training pixels unless val_fraction is set
HASHGRID_ANNEAL_FRACTION = 0.25  # NeRD's hash-grid variant anneals its learning rate over the run's last quarter unless anneal_fraction is set
PATCH = 2  # side of PhySG's pixel patches for the normal smoothness (its r_patch = 1)
PRESETS = {
    # PhySG's reference sizes (IDR's SDF network 8 x 256 here, 8 x 512 in IDR; albedo MLP 4 x 256)
    "full": dict(sdf_width=256, sdf_depth=8, sdf_skips=(4,), sdf_freqs=6, albedo_width=256, albedo_depth=4, albedo_freqs=10,
                 steps=100_000, batch_rays=2048, lr=5e-4, trace_samples=100),
    # fits on 2 CPU cores in minutes (see benchmarks/RESULTS.md)
    "small": dict(sdf_width=64, sdf_depth=4, sdf_skips=(2,), sdf_freqs=6, albedo_width=64, albedo_depth=3, albedo_freqs=6,
                  steps=3000, batch_rays=512, lr=1e-3, trace_samples=32),
}
# NeRD (relight/nerd.py): "full" is the reference code's blender configuration (8 x 256 networks,
# 64 + 128 samples, 1024 rays, Adam 1e-4, 300 epochs of 1000 steps); "small" fits 2 CPU cores (latent_l2
# 1e-3, not 0.1: benchmarks/RESULTS.md)
NERD_PRESETS = {
    "full": dict(net_width=256, net_depth=8, pos_freqs=10, coarse_samples=64, fine_samples=128, steps=300_000, batch_rays=1024, lr=1e-4,
                 schedule_paper_steps=300_000, latent_l2=0.1),
    "small": dict(net_width=64, net_depth=4, pos_freqs=6, coarse_samples=32, fine_samples=64, steps=3000, batch_rays=256, lr=1e-3,
                  schedule_paper_steps=12_000, latent_l2=1e-3),
}


@dataclass
class RelightConfig:
    """Options of a PhySG fit. ``None`` fields take the ``preset``'s value.

    lobes: SGs of each environment light (PhySG 128, NeRD 24 by default); eikonal_weight / mask_weight /
    mask_alpha: IDR's loss weights (0.1, 100) and the mask loss's initial sharpness (50, doubled at 1/8,
    2/8, ..., 5/8 of the run); normal_smooth_weight: PhySG's normal smoothness over 2 x 2 pixel
    patches (1.0 in its reference configuration; 0 samples single pixels, as IDR); roughness /
    specular_albedo: initial specular lobe; trace_samples: uniform samples per unconverged ray for
    the secant bracket (IDR: 100).

    NeRD (``method = "nerd"``): net_width / net_depth / pos_freqs: both networks' trunks (the
    reference's 256 x 8, 10 octaves); coarse_samples / fine_samples: stratified samples of the
    sampling network and importance samples of the decomposition network (64 / 128);
    condense_features: size of the illumination embedding of the sampling network (16);
    brdf_latent: the BRDF auto-encoder's latent size (2); latent_l2: the L2 penalty on its latent
    layer's weights (the reference's 0.1 in ``full``; ``small`` 1e-3: at 0.1 a short run's latent
    collapses, z varying by 0.006 over the object, and the base colour is one constant,
    benchmarks/RESULTS.md); min_roughness: the decoder's roughness
    lies in [min_roughness, 1] (keeps the SG lobe's sharpness 2 / r^4 finite); mask_loss: the
    reference's segmentation-mask loss, ramped in by the schedule (``relight.nerd``);
    schedule_paper_steps: the reference steps whose schedule the run plays, compressed to its
    length (full: all 300 000; small: the first 12 000, where its colour blend and mask ramp act —
    measured better than the whole schedule compressed on a 400-step CPU fit, benchmarks/RESULTS.md).
    encoding: NeRD's trunks, ``"frequency"`` (the paper's Fourier features) or ``"hashgrid"`` (the faster
    variant, ``relight.nerd.NerdShape``: instant-ngp's hash encoding with ``hash_levels`` x
    ``hash_features``, 2^``log2_table_size`` rows, resolutions ``hash_base_resolution`` ..
    ``hash_finest_resolution`` (default: twice the training images' larger side, set when the fit
    starts), ``net_depth`` 1 unless set, exp(raw - 1) density; the tables train at ``hash_lr`` with
    instant-ngp's Adam betas / eps, everything else at ``lr``). The defaults, 8 levels of 2 features
    and 2^15 rows, are the sizes measured on the 64-pixel benchmark (benchmarks/RESULTS.md).
    val_fraction: NeRD's early stopping, as the NeRF's (``physinv.nerf.config``): that share of the
    training pixels (at most ``eval_rays``) is never trained on; every ``eval_every`` steps their PSNR
    (the decomposition pass under each frame's learnt light and exposure) decides whether the model
    is the best so far, and ``relight eval / render / edit / export`` load the best one. Default 0
    for the paper's networks (the reference keeps its last model), 0.01 for the hash-grid variant.
    anneal_fraction / anneal_lr_factor: over the run's last ``anneal_fraction`` the learning rate
    (both groups) also decays exponentially to ``anneal_lr_factor`` x, on top of the reference's
    schedule. Default 0 for the paper's networks; 0.25 for the hash-grid variant, whose constant
    rate (and 256-ray batches) leaves it on a noisy plateau: annealing x0.01 for 10 minutes after a
    60-minute run raised its novel views by 0.27 dB where 10 more minutes at the same rate gave
    -0.01 dB; the 60-minute benchmark run scored 33.95 dB with it and early stopping, 33.70 without
    (benchmarks/RESULTS.md). A short run far from that plateau loses by annealing (1.1-1.9 dB on
    the tests' 300-step fit).
    restart_roughness: when annealing begins, restart the BRDF decoder's roughness output at 0.5
    everywhere (``BrdfAutoEncoder.restart_roughness_``) and let it be learnt again under the
    converged light and normals. Early in a fit, under the mean light and noisy normals, a glossy
    lobe fits nothing, so the roughness climbs to the sigmoid's ceiling (1.0 on glossy plastic of
    roughness 0.35) and the lights co-adapt to it; keeping the logits off that ceiling only lowers the
    score (-0.3 dB), restarting it lets it settle at 0.75: the 60-minute benchmark run scores 33.99
    dB (last model 34.07) against 33.95 without, 0.3-0.4 dB more under the strong sun
    (benchmarks/RESULTS.md). Default on for the hash-grid variant when it anneals; off for the paper's
    networks.
    """

    method: str = "physg"
    preset: str = "small"
    steps: Optional[int] = None
    batch_rays: Optional[int] = None
    lr: Optional[float] = None
    lobes: Optional[int] = None
    sdf_width: Optional[int] = None
    sdf_depth: Optional[int] = None
    sdf_skips: Optional[list[int]] = None
    sdf_freqs: Optional[int] = None
    albedo_width: Optional[int] = None
    albedo_depth: Optional[int] = None
    albedo_freqs: Optional[int] = None
    trace_samples: Optional[int] = None
    init_radius: float = 0.6
    roughness: float = 0.5
    specular_albedo: float = 0.3
    eikonal_weight: float = 0.1
    normal_smooth_weight: float = 1.0
    mask_weight: float = 100.0
    mask_alpha: float = 50.0
    net_width: Optional[int] = None
    net_depth: Optional[int] = None
    pos_freqs: Optional[int] = None
    coarse_samples: Optional[int] = None
    fine_samples: Optional[int] = None
    condense_features: int = 16
    brdf_latent: int = 2
    latent_l2: Optional[float] = None
    min_roughness: float = 0.1
    encoding: str = "frequency"
    hash_levels: int = 8
    hash_features: int = 2
    log2_table_size: int = 15
    hash_base_resolution: int = 16
    hash_finest_resolution: Optional[int] = None
    hash_lr: float = 1e-2
    mask_loss: bool = True
    schedule_paper_steps: Optional[float] = None
    val_fraction: Optional[float] = None
    anneal_fraction: Optional[float] = None
    anneal_lr_factor: float = 0.01
    restart_roughness: Optional[bool] = None
    eval_every: int = 500
    eval_rays: int = 2048
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 25


def resolve(cfg: RelightConfig) -> RelightConfig:
    """Fill the preset's values and check ranges (``PhysinvError`` naming the option)."""
    if cfg.method not in METHODS:
        raise PhysinvError(f"--method: unknown method '{cfg.method}' (known: {', '.join(METHODS)})")
    if cfg.preset not in PRESETS:
        raise PhysinvError(f"preset: unknown preset '{cfg.preset}' (known: {', '.join(PRESETS)})")
    table = NERD_PRESETS if cfg.method == "nerd" else PRESETS
    values = {k: (v if getattr(cfg, k) is None else getattr(cfg, k)) for k, v in table[cfg.preset].items()}
    values["lobes"] = cfg.lobes if cfg.lobes is not None else (24 if cfg.method == "nerd" else 128)
    hash_nerd = cfg.method == "nerd" and cfg.encoding == "hashgrid"  # the faster variant's own defaults
    if hash_nerd and cfg.net_depth is None:
        values["net_depth"] = HASHGRID_NET_DEPTH
    if cfg.val_fraction is None:
        values["val_fraction"] = HASHGRID_VAL_FRACTION if hash_nerd else 0.0
    if cfg.anneal_fraction is None:
        values["anneal_fraction"] = HASHGRID_ANNEAL_FRACTION if hash_nerd else 0.0
    if cfg.restart_roughness is None:  # with the annealing it waits for
        values["restart_roughness"] = hash_nerd and values.get("anneal_fraction", cfg.anneal_fraction) > 0
    if "sdf_skips" in values:
        values["sdf_skips"] = list(values["sdf_skips"])
    out = replace(cfg, **values)
    if out.method == "nerd":
        return _check_nerd(out)
    if out.encoding != "frequency":
        raise PhysinvError(f"encoding: '{out.encoding}' is a NeRD option (--method nerd); PhySG's networks take Fourier features only")
    if out.val_fraction != 0:
        raise PhysinvError(f"val_fraction: {out.val_fraction} is a NeRD option (--method nerd); PhySG keeps its last model")
    if out.anneal_fraction != 0:
        raise PhysinvError(f"anneal_fraction: {out.anneal_fraction} is a NeRD option (--method nerd); PhySG halves its rate at 1/2 and 3/4 of the run")
    if out.restart_roughness:
        raise PhysinvError("restart_roughness: a NeRD option (--method nerd); PhySG's roughness is one global parameter")
    for name in ("lobes", "batch_rays", "trace_samples", "sdf_width", "sdf_depth", "albedo_width", "albedo_depth"):
        if getattr(out, name) < 1:
            raise PhysinvError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(out, name)}")
    if out.steps < 0:
        raise PhysinvError(f"--steps: must be >= 0, got {out.steps}")
    for name in ("roughness", "specular_albedo"):
        if not 0.0 < getattr(out, name) < 1.0:
            raise PhysinvError(f"{name}: must be in (0, 1), got {getattr(out, name)}")
    if out.normal_smooth_weight < 0:
        raise PhysinvError(f"normal_smooth_weight: must be >= 0, got {out.normal_smooth_weight}")
    if out.normal_smooth_weight > 0 and out.batch_rays < PATCH * PATCH:
        raise PhysinvError(f"--batch-rays: the normal smoothness samples {PATCH} x {PATCH} patches, so at least {PATCH * PATCH} rays, got {out.batch_rays}")
    if out.lr <= 0 or out.init_radius <= 0 or out.init_radius >= 1:
        raise PhysinvError("lr must be > 0 and init_radius in (0, 1)")
    return out


def _check_nerd(out: RelightConfig) -> RelightConfig:
    for name in ("lobes", "batch_rays", "net_width", "net_depth", "coarse_samples", "brdf_latent"):
        if getattr(out, name) < 1:
            raise PhysinvError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(out, name)}")
    for name in ("pos_freqs", "fine_samples", "condense_features"):
        if getattr(out, name) < 0:
            raise PhysinvError(f"{name}: must be >= 0, got {getattr(out, name)}")
    if out.steps < 0:
        raise PhysinvError(f"--steps: must be >= 0, got {out.steps}")
    if not out.schedule_paper_steps > 0:
        raise PhysinvError(f"schedule_paper_steps: must be > 0, got {out.schedule_paper_steps}")
    if not 0.0 < out.min_roughness < 1.0:
        raise PhysinvError(f"min_roughness: must be in (0, 1), got {out.min_roughness}")
    if out.lr <= 0:
        raise PhysinvError(f"lr: must be > 0, got {out.lr}")
    if out.latent_l2 < 0:
        raise PhysinvError(f"latent_l2: must be >= 0, got {out.latent_l2}")
    if not 0.0 <= out.val_fraction < 1.0:
        raise PhysinvError(f"val_fraction: must be in [0, 1), got {out.val_fraction}")
    if not 0.0 <= out.anneal_fraction <= 1.0:
        raise PhysinvError(f"anneal_fraction: must be in [0, 1], got {out.anneal_fraction}")
    if not 0.0 < out.anneal_lr_factor <= 1.0:
        raise PhysinvError(f"anneal_lr_factor: must be in (0, 1], got {out.anneal_lr_factor}")
    if out.restart_roughness and out.anneal_fraction == 0:
        raise PhysinvError("restart_roughness: restarts the roughness when annealing begins; set anneal_fraction > 0 (or restart_roughness = false)")
    for name in ("eval_every", "eval_rays"):
        if getattr(out, name) < 1:
            raise PhysinvError(f"{name}: must be >= 1, got {getattr(out, name)}")
    if out.encoding not in ENCODINGS:
        raise PhysinvError(f"encoding: unknown encoding '{out.encoding}' (known: {', '.join(ENCODINGS)})")
    if out.encoding == "hashgrid":
        for name in ("hash_levels", "log2_table_size", "hash_base_resolution"):
            if getattr(out, name) < 1:
                raise PhysinvError(f"{name}: must be >= 1, got {getattr(out, name)}")
        from physinv.core.hashgrid_cpu import SUPPORTED_FEATURES  # the fused CPU kernel's

        if out.hash_features not in SUPPORTED_FEATURES:
            raise PhysinvError(f"hash_features: must be {', '.join(map(str, SUPPORTED_FEATURES[:-1]))} or {SUPPORTED_FEATURES[-1]}, got {out.hash_features}")
        if out.hash_finest_resolution is not None and out.hash_finest_resolution < out.hash_base_resolution:
            raise PhysinvError(f"hash_finest_resolution: must be >= hash_base_resolution ({out.hash_base_resolution}), got {out.hash_finest_resolution}")
        if out.hash_lr <= 0:
            raise PhysinvError(f"hash_lr: must be > 0, got {out.hash_lr}")
    elif out.net_depth < 2:
        raise PhysinvError(f"net_depth: must be >= 2 (two halves with the input fed again), got {out.net_depth}")
    return out
