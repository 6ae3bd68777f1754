"""Configuration of ``physinv relight fit`` (TOML keys = field names; flags override)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from physinv.errors import PhysinvError

METHODS = ("physg",)
PRESETS = {
    # PhySG's reference sizes (IDR's SDF network 8 x 256 here, 8 x 512 in IDR; albedo MLP 4 x 256)
    "full": dict(sdf_width=256, sdf_depth=8, sdf_skips=(4,), sdf_freqs=6, albedo_width=256, albedo_depth=4, albedo_freqs=10,
                 steps=100_000, batch_rays=2048, lr=5e-4, trace_samples=100),
    # fits on 2 CPU cores in minutes (see benchmarks/RESULTS.md)
    "small": dict(sdf_width=64, sdf_depth=4, sdf_skips=(2,), sdf_freqs=6, albedo_width=64, albedo_depth=3, albedo_freqs=6,
                  steps=3000, batch_rays=512, lr=1e-3, trace_samples=32),
}


@dataclass
class RelightConfig:
    """Options of a PhySG fit. ``None`` fields take the ``preset``'s value.

    lobes: SGs of the environment light (128 in PhySG; 24 also usual); eikonal_weight / mask_weight /
    mask_alpha: IDR's loss weights (0.1, 100) and the mask loss's initial sharpness (50, doubled at 1/8,
    2/8, ..., 5/8 of the run); roughness / specular_albedo: initial specular lobe; trace_samples:
    uniform samples per unconverged ray for the secant bracket (IDR: 100).
    """

    method: str = "physg"
    preset: str = "small"
    steps: Optional[int] = None
    batch_rays: Optional[int] = None
    lr: Optional[float] = None
    lobes: int = 128
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
    mask_weight: float = 100.0
    mask_alpha: float = 50.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 25


def resolve(cfg: RelightConfig) -> RelightConfig:
    """Fill the preset's values and check ranges (``PhysinvError`` naming the option)."""
    if cfg.method not in METHODS:
        raise PhysinvError(f"--method: unknown method '{cfg.method}' (known: {', '.join(METHODS)})")
    if cfg.preset not in PRESETS:
        raise PhysinvError(f"preset: unknown preset '{cfg.preset}' (known: {', '.join(PRESETS)})")
    values = {k: (v if getattr(cfg, k) is None else getattr(cfg, k)) for k, v in PRESETS[cfg.preset].items()}
    values["sdf_skips"] = list(values["sdf_skips"])
    out = replace(cfg, **values)
    for name in ("lobes", "batch_rays", "trace_samples", "sdf_width", "sdf_depth", "albedo_width", "albedo_depth"):
        if getattr(out, name) < 1:
            raise PhysinvError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(out, name)}")
    if out.steps < 0:
        raise PhysinvError(f"--steps: must be >= 0, got {out.steps}")
    for name in ("roughness", "specular_albedo"):
        if not 0.0 < getattr(out, name) < 1.0:
            raise PhysinvError(f"{name}: must be in (0, 1), got {getattr(out, name)}")
    if out.lr <= 0 or out.init_radius <= 0 or out.init_radius >= 1:
        raise PhysinvError("lr must be > 0 and init_radius in (0, 1)")
    return out
