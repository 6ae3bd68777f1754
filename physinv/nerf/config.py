"""Configuration of ``physinv nerf train``: one dataclass for the three methods.

Fields left at ``None`` take the method's (and, for batch sizes, the device's) default from
:func:`resolve`, so a TOML file or a flag only names what it changes.

Methods:

* ``nerf``  — Mildenhall et al. 2020 as the paper states it: positional encoding L=10 (positions)
  and L=4 (directions), 8x256 ReLU MLP with the input again at the fifth layer, density from the
  position only, colour from a 256-feature plus the encoded direction (one 128 layer); 64 stratified
  coarse samples, 128 fine samples by inverse transform sampling of the coarse weights (the fine
  network sees all 192), MSE on coarse and fine, Adam 5e-4 decaying exponentially by 0.1 over
  250k steps, batches of 4096 rays. Like the authors' PyTorch port (nerf-pytorch, ``precrop_iters``
  / ``precrop_frac`` of its Blender configurations) the first ``precrop_steps`` = 500 steps draw
  rays from the central half of each image only: on objects in front of a uniform background the
  ReLU density otherwise tends to collapse to "background everywhere" before any surface is found
  (not in the paper; ``precrop_steps = 0`` turns it off). Also as the authors' code, unit Gaussian
  noise is added to the density before its ReLU while training (``density_noise_std``, their
  ``raw_noise_std``): with PyTorch's default initialisation the untrained trunk is nearly constant
  in space (sigma's pre-activation varies by ~0.004 around a mean of +-0.05), so for about half
  the seeds every sample starts with sigma = 0 and a zero gradient, and the model never leaves the
  "background everywhere" state.
* ``ngp``   — instant-ngp style: hash grid (16 levels x 2 features, T = 2^19), SH directions
  (l_max = 3, instant-ngp's "degree 4", 16 coefficients), a 1x64 density MLP and a 2x64 colour
  MLP, an occupancy grid (128^3 on CUDA, 64^3 on CPU by default, EMA decay 0.95, threshold 0.01 on
  ``density * step``), packed samples marched at about half a pixel per step (``render_steps``; one
  pixel per step trains faster at first but stalls at the plain model's PSNR, see
  benchmarks/RESULTS.md); Adam 1e-2, betas (0.9, 0.99), eps 1e-15, L2 1e-6 on
  the MLP weights only (instant-ngp). The log density is offset by ``density_bias = -1`` (as nerfacc
  does): the initial fog is thin, so the first grid update (step 16) already finds most empty
  space below the threshold, where from a start at density 1 the grid holds it occupied until the
  0.95-per-update decay brings it down (tens of updates, hundreds of steps).
  instant-ngp also skips hash-table entries whose gradient is exactly zero; that optimiser is
  ``sparse_grad = true`` (:class:`physinv.nerf.optim.InstantNGPAdam`, sparse gradients of the hashed
  levels, each entry bias-corrected by its own step count). It is off by default: in pure PyTorch on
  a CPU it costs more per step than one dense Adam pass and reached the plain model's PSNR later
  (benchmarks/RESULTS.md); on a GPU it is unmeasured. The dense Adam is PyTorch's fused kernel.
  The hash grid runs physinv's fused CPU kernel when it is built (``hash_backend = auto``; ``torch``
  is the pure-PyTorch reference and the CUDA path, see :mod:`physinv.core.hashgrid_cpu`).
  The learning rate follows ``lr_schedule = run``: ``lr * 0.1^f`` with ``f`` the share of the run
  done, by ``--steps`` or ``--max-minutes``, whichever ends it (instant-ngp and nerfacc decay the
  rate over their fixed step counts; here a run of any length ends annealed). On 100 views of
  64x64 pixels the model still overfits late in a long run: the training rays' PSNR climbs past
  40 dB while the held-out PSNR peaks and then sinks by 0.2-0.4 dB (benchmarks/RESULTS.md).
  ``hash_decay`` (Zip-NeRF's normalised weight decay of the tables, ``hash_decay * mean_l
  mean(V_l^2)``, a per-level L2 inside Adam) narrows that gap: with ``hash_decay = 1`` and
  ``lr_final_fraction = 0.01`` a 10-minute CPU run ends 0.36 dB higher on the test images, but
  starts slower and still sinks from its peak, so it is not the default. What the default does
  instead is early stopping: ``val_fraction`` = 1 % of the training pixels (at most ``eval_rays``)
  are never trained on, and the model with the best PSNR on them is kept and loaded for inference
  (:mod:`physinv.nerf.train`), so a longer run never returns a worse model.
* ``plain`` — the same field as ``ngp`` (``density_bias`` included) with ``samples_per_ray``
  uniform stratified samples in the scene box and no occupancy grid (the reference configuration
  of the speed benchmark, which runs it on the pure-PyTorch encoding): dense ``torch.optim.Adam``
  1e-2, betas (0.9, 0.99), eps 1e-15, no L2, the same ``run`` schedule.

Appearance embedding (``appearance_dim`` > 0, ``ngp`` and ``plain``; NeRD's "NeRF-A" baseline after
NeRF-W, Martin-Brualla et al. 2021): one learnt code of ``appearance_dim`` numbers per illumination
of the training views, grouped by their ``light`` name as NeRD groups its lights
(:func:`physinv.io.dataset.light_sets`: frames naming the same light share a code, a frame without
a name gets its own), concatenated to the colour MLP's input only, so the density (the geometry) stays
shared by every light. Codes start at N(0, 0.01^2) (near zero, all lights alike at first). A view
under a light the run never saw is rendered with the mean of the codes. NeRF-W uses 48 numbers for
thousands of tourist photos; a scene under a handful of illuminations needs far fewer (the
benchmark's baseline uses 16).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from physinv.core.encoding import HASH_GRID_BACKENDS
from physinv.errors import PhysinvError

METHODS = ("nerf", "ngp", "plain")
LR_SCHEDULES = ("steps", "run")


@dataclass
class NerfConfig:
    method: str = "ngp"
    steps: int = 20000
    seed: int = 0
    batch_rays: Optional[int] = None  # nerf 4096 (paper); ngp/plain 8192 on CUDA, 1024 on CPU
    lr: Optional[float] = None  # nerf 5e-4, ngp/plain 1e-2
    lr_decay_steps: Optional[int] = None  # lr_schedule "steps": lr falls by 0.1 over this many steps (nerf 250000, ngp/plain 30000)
    lr_schedule: Optional[str] = None  # "steps" (exponential over lr_decay_steps) | "run" (exponential to lr_final_fraction over the run: --steps or --max-minutes, whichever ends it)
    lr_final_fraction: float = 0.1  # lr_schedule "run": the lr at the end of the run, as a fraction of lr
    checkpoint_every: int = 500
    eval_every: int = 250
    eval_rays: int = 4096  # held-out rays for the PSNR curve
    chunk_rays: int = 8192  # rays per forward pass when rendering images
    # nerf
    pos_freqs: int = 10
    dir_freqs: int = 4
    width: int = 256
    depth: int = 8
    skip_layer: int = 4  # 0-based index of the layer that sees the input again (the fifth)
    coarse_samples: int = 64
    fine_samples: int = 128
    density_noise_std: float = 1.0  # nerf: N(0, std^2) added to sigma before its ReLU while training (the authors' raw_noise_std)
    precrop_steps: Optional[int] = None  # nerf 500, ngp/plain 0: steps whose rays come from the central crop
    precrop_fraction: float = 0.5  # side of that crop, as a fraction of the image side
    # ngp / plain
    levels: int = 16
    features_per_level: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    finest_resolution: int = 512
    sh_l_max: int = 3
    hidden: int = 64
    geo_features: int = 15
    samples_per_ray: Optional[int] = None  # plain: 128 on CUDA, 64 on CPU
    grid_resolution: Optional[int] = None  # 128 on CUDA (instant-ngp); 64 on CPU, where a 128^3 update costs more than the steps it saves
    grid_decay: float = 0.95
    grid_threshold: float = 0.01
    grid_update_every: int = 16
    grid_warmup_updates: int = 2  # the first updates visit every cell (instant-ngp: all cells while warming up)
    grid_update_fraction: float = 0.25  # of the cells, sampled uniformly (plus as many occupied ones)
    render_steps: Optional[int] = None  # ngp marching step = box diagonal / render_steps; default 2 x image size (about half a pixel per step, as instant-ngp)
    density_bias: float = -1.0  # ngp/plain: added to the log-density before trunc_exp (nerfacc's -1): the initial fog is e^-1 thin, not opaque
    early_stop_eps: float = 1e-4  # ngp: drop samples behind transmittance < eps (0 disables)
    mixed_precision: bool = True  # bf16 autocast for the ngp/plain MLPs on CUDA
    compile: bool = False  # torch.compile the ngp/plain MLPs on CUDA
    hash_backend: str = "auto"  # ngp/plain hash grid: auto (the fused CPU kernel when built, else PyTorch) | torch (the reference) | fused
    sparse_grad: Optional[bool] = None  # True: sparse table gradients + instant-ngp's lazy Adam; default False (dense Adam), see above
    mlp_weight_decay: Optional[float] = None  # L2 on the MLP weight matrices (ngp 1e-6 as instant-ngp; plain 0)
    val_fraction: Optional[float] = None  # share of the training pixels (at most eval_rays) held out to keep the best model (early stopping); ngp/plain 0.01, nerf 0 (the paper); 0 disables
    hash_decay: float = 0.0  # ngp/plain: Zip-NeRF's normalised weight decay of the hash tables, hash_decay * mean_l mean(V_l^2) (Zip-NeRF 0.1; off by default, see above)
    appearance_dim: int = 0  # ngp/plain: width of a learnt per-illumination appearance code fed to the colour MLP (NeRF-W's appearance embedding; 0 = off), see below


_METHOD_DEFAULTS = {
    "nerf": {"lr": 5e-4, "lr_decay_steps": 250_000, "lr_schedule": "steps", "precrop_steps": 500, "val_fraction": 0.0},
    "ngp": {"lr": 1e-2, "lr_decay_steps": 30_000, "lr_schedule": "run", "sparse_grad": False, "mlp_weight_decay": 1e-6, "precrop_steps": 0, "val_fraction": 0.01},
    "plain": {"lr": 1e-2, "lr_decay_steps": 30_000, "lr_schedule": "run", "sparse_grad": False, "mlp_weight_decay": 0.0, "precrop_steps": 0, "val_fraction": 0.01},
}


def resolve(config: NerfConfig, device: torch.device | str) -> NerfConfig:
    """Fill the ``None`` fields with the method's and device's defaults; check ranges."""
    if config.method not in METHODS:
        raise PhysinvError(f"--method: unknown method '{config.method}' (known: {', '.join(METHODS)})")
    cuda = torch.device(device).type == "cuda"
    values = dataclasses.asdict(config)
    for key, value in _METHOD_DEFAULTS[config.method].items():
        if values[key] is None:
            values[key] = value
    if values["batch_rays"] is None:
        values["batch_rays"] = 4096 if config.method == "nerf" else (8192 if cuda else 1024)
    if values["grid_resolution"] is None:
        values["grid_resolution"] = 128 if cuda else 64
    if values["samples_per_ray"] is None:
        values["samples_per_ray"] = 128 if cuda else 64
    for key in ("batch_rays", "coarse_samples", "samples_per_ray", "render_steps", "grid_resolution", "levels", "chunk_rays"):
        if values[key] is not None and values[key] <= 0:
            raise PhysinvError(f"--{key.replace('_', '-')}: must be > 0, got {values[key]}")
    if not 0 <= values["val_fraction"] < 0.5:
        raise PhysinvError(f"--val-fraction: must be in [0, 0.5), got {values['val_fraction']}")
    if values["appearance_dim"] < 0:
        raise PhysinvError(f"--appearance-dim: must be >= 0, got {values['appearance_dim']}")
    if values["appearance_dim"] and config.method == "nerf":
        raise PhysinvError("--appearance-dim: only the ngp and plain methods have an appearance embedding (nerf: use 0)")
    if values["hash_decay"] < 0:
        raise PhysinvError(f"--hash-decay: must be >= 0, got {values['hash_decay']}")
    if values["mlp_weight_decay"] is not None and values["mlp_weight_decay"] < 0:
        raise PhysinvError(f"--mlp-weight-decay: must be >= 0, got {values['mlp_weight_decay']}")
    if values["hash_backend"] not in HASH_GRID_BACKENDS:
        raise PhysinvError(f"--hash-backend: must be one of {', '.join(HASH_GRID_BACKENDS)}, got '{values['hash_backend']}'")
    if values["lr_schedule"] not in LR_SCHEDULES:
        raise PhysinvError(f"--lr-schedule: must be one of {', '.join(LR_SCHEDULES)}, got '{values['lr_schedule']}'")
    if not 0 < values["lr_final_fraction"] <= 1:
        raise PhysinvError(f"--lr-final-fraction: must be in (0, 1], got {values['lr_final_fraction']}")
    if values["density_noise_std"] < 0:
        raise PhysinvError(f"--density-noise-std: must be >= 0, got {values['density_noise_std']}")
    if values["precrop_steps"] < 0:
        raise PhysinvError(f"--precrop-steps: must be >= 0, got {values['precrop_steps']}")
    if not 0 < values["precrop_fraction"] <= 1:
        raise PhysinvError(f"--precrop-fraction: must be in (0, 1], got {values['precrop_fraction']}")
    if not 0 <= values["sh_l_max"] <= 4:
        raise PhysinvError(f"sh_l_max: must be in 0..4, got {values['sh_l_max']}")
    return NerfConfig(**values)
