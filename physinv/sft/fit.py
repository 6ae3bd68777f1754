"""``physinv sft fit``: φ-SfT's analysis by synthesis (Kairanda et al. 2022, Sec. 3.2–3.3).

Unknowns φ = {d, S, B, w, F}: density, stretching table (24), bending table (15), wind velocity
(3), per-frame per-vertex corrective velocities F_t. The simulator (:mod:`physinv.sft.cloth`)
turns φ into surfaces S_t starting from the template at rest; the soft rasterizer
(:mod:`physinv.core.raster`) renders them with the template's texture; the energy is

    E = Σ_t mean|R(S_t, T) − I_t|  +  λ Σ_t mean|G(A_t; σ) − G(B_t; σ)|

over the active frames t ≥ 1 (frame 0 is the template), λ = 0.5, minimised with Adam (lr 1e-3).
The adaptive temporal window starts with the first five frames; the next frame joins when the
latest active frame's energy falls below b, b being the energy of the fifth frame when the sixth
joined, or after ``max_iters_per_frame`` iterations.

Choices and deviations, each tied to a test in ``tests/sft/test_fit.py``:

1. Norms are means over pixels (and colour channels) instead of sums, so that λ, the window
   threshold and the learning rate do not depend on the image size.
2. σ = 7 px is taken at a reference image width of 256 px and scaled with the fitting width
   (σ = 7·W/256 px); the paper gives 7 px without the resolution its renderer ran at.
3. Parametrisation for Adam: the material is optimised as log-multipliers of the default
   material (d = d0·e^a, S = S0∘e^s, B = B0∘e^b) so one learning rate suits quantities that
   differ by 10⁷ and they stay positive; wind in m/s; correctives as velocities in m/s
   (φ-SfT: ``v_t ← v_t + F_t``). ``test_initial_state_is_the_default_material``.
4. Handles: vertices listed in ``meta.json`` ``handles`` (template vertex ids, held by a hand or a
   clamp) are scripted vertices whose per-frame offsets are optimised with the other
   parameters (their motion is unknown to the method); without ``handles`` every vertex is free.
5. Only-F (``--only-correctives``): per-vertex offsets per frame added to the template, no
   physics, as the paper implements that baseline.
6. Fitting resolution: frames and masks may be area-downsampled (``fit_res``) with the intrinsics
   scaled accordingly (pixel centres at integers: c' = (c + ½)·s − ½).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from physinv.errors import PhysinvError

REFERENCE_WIDTH = 256  # deviation 2


@dataclass
class SftFitConfig:
    """Options of ``physinv sft fit`` (TOML keys = field names)."""

    steps: int = 800  # optimisation iterations in total
    lr: float = 1e-3  # Adam (φ-SfT)
    silhouette_weight: float = 0.5  # λ (φ-SfT)
    silhouette_sigma_px: float = 7.0  # σ of G at REFERENCE_WIDTH px (deviation 2)
    raster_sigma: float = 0.1  # SoftRas σ [px²] at the fitting resolution
    raster_gamma: float = 1e-4  # SoftRas γ
    fit_res: int = 128  # fitting image width in px (0: the data's resolution)
    substeps: int = 1  # simulator steps per frame
    window_start: int = 5  # frames active at the start (φ-SfT: 5)
    max_iters_per_frame: int = 20  # iterations before the next frame joins regardless
    correctives: bool = True  # --no-correctives
    adaptive: bool = True  # --no-adaptive
    silhouette: bool = True  # --no-silhouette
    only_correctives: bool = False  # --only-correctives (Only F baseline)
    max_frames: int = 0  # use the first N frames only (0: all)
    solver: str = "auto"  # dense | sparse | cg | auto (CPU: dense up to 100 vertices, else sparse; CUDA: dense up to 2000, else cg)
    checkpoint_every: int = 25
    seed: int = 0
    device: str = "auto"


class PhysicsParams(nn.Module):
    """φ = {d, S, B, w, F} plus handle offsets (deviation 3, 4)."""

    def __init__(self, num_frames: int, num_vertices: int, num_handles: int, dtype=torch.float64):
        super().__init__()
        self.log_density = nn.Parameter(torch.zeros((), dtype=dtype))
        self.log_stretching = nn.Parameter(torch.zeros(6, 4, dtype=dtype))
        self.log_bending = nn.Parameter(torch.zeros(3, 5, dtype=dtype))
        self.wind = nn.Parameter(torch.zeros(3, dtype=dtype))
        self.correctives = nn.Parameter(torch.zeros(num_frames - 1, num_vertices, 3, dtype=dtype))
        self.handle_offsets = nn.Parameter(torch.zeros(num_frames, num_handles, 3, dtype=dtype))

    def material(self):
        from physinv.sft.cloth import Material, default_material

        base = default_material(self.wind.dtype, self.wind.device)
        return Material(base.density * self.log_density.exp(), base.stretching * self.log_stretching.exp(), base.bending * self.log_bending.exp())


class OffsetParams(nn.Module):
    """Only F: per-frame per-vertex offsets [m] from the template (deviation 5)."""

    def __init__(self, num_frames: int, num_vertices: int, dtype=torch.float64):
        super().__init__()
        self.offsets = nn.Parameter(torch.zeros(num_frames - 1, num_vertices, 3, dtype=dtype))


@dataclass
class FitProblem:
    """Everything the energy needs, on the fitting device."""

    frames: torch.Tensor  # (T, H, W, 3) float32
    masks_blurred: torch.Tensor  # (T, H, W) float32
    intrinsics: torch.Tensor  # (4,) at the fitting resolution
    world_to_camera: torch.Tensor
    width: int
    height: int
    vertices: torch.Tensor  # (V, 3) float64
    faces: torch.Tensor
    uvs: torch.Tensor
    texture: torch.Tensor
    frame_dt: float
    handles: torch.Tensor  # (H,) long
    gravity: torch.Tensor
    blur_sigma: float


def prepare(seq, cfg: SftFitConfig, device: torch.device) -> FitProblem:
    """Downsample the sequence to the fitting resolution and move it to ``device`` (deviation 6)."""
    from physinv.core.raster import gaussian_blur

    W, H = seq.size
    frames, masks, intr = seq.frames, seq.masks, seq.intrinsics.clone()
    if cfg.max_frames:
        frames, masks = frames[: cfg.max_frames], masks[: cfg.max_frames]
    if cfg.fit_res and cfg.fit_res != W:
        s = cfg.fit_res / W
        w, h = cfg.fit_res, max(1, round(H * s))
        frames = F.interpolate(frames.permute(0, 3, 1, 2), size=(h, w), mode="area").permute(0, 2, 3, 1)
        masks = F.interpolate(masks[:, None], size=(h, w), mode="area")[:, 0]
        intr = torch.stack([intr[0] * s, intr[1] * h / H, (intr[2] + 0.5) * s - 0.5, (intr[3] + 0.5) * h / H - 0.5])
        W, H = w, h
    blur = cfg.silhouette_sigma_px * W / REFERENCE_WIDTH
    handles = [int(i) for i in seq.meta.get("handles", [])]
    V = seq.vertices.shape[0]
    if any(i < 0 or i >= V for i in handles):
        raise PhysinvError(f"{seq.root / 'meta.json'}: handles: vertex ids must be in [0, {V}), got {handles}")
    gravity = torch.tensor(seq.meta.get("gravity", [0.0, 0.0, -9.8]), dtype=torch.float64)
    return FitProblem(
        frames.float().to(device), gaussian_blur(masks.float(), blur).to(device), intr.to(device), seq.world_to_camera.to(device), W, H,
        seq.vertices.to(device), seq.faces.to(device), seq.uvs.to(device), seq.texture.float().to(device),
        1.0 / seq.fps, torch.tensor(handles, dtype=torch.long, device=device), gravity.to(device), blur,
    )


def surfaces(params: nn.Module, prob: FitProblem, cfg: SftFitConfig, num_frames: int, model=None) -> torch.Tensor:
    """S_0..S_{num_frames−1} (num_frames, V, 3) from the parameters."""
    from physinv.sft.cloth import simulate

    if isinstance(params, OffsetParams):
        return torch.cat([prob.vertices[None], prob.vertices[None] + params.offsets[: num_frames - 1]])
    V, cpu = prob.vertices.shape[0], prob.vertices.device.type == "cpu"
    auto = ("dense" if V <= 100 else "sparse") if cpu else ("dense" if V <= 2000 else "cg")
    solver = cfg.solver if cfg.solver != "auto" else auto
    handles = prob.handles if prob.handles.numel() else None
    path = (prob.vertices[prob.handles][None] + params.handle_offsets[:num_frames]) if handles is not None else None
    correctives = params.correctives[: num_frames - 1] if cfg.correctives else None
    return simulate(model, params.material(), prob.vertices, num_frames, prob.frame_dt, cfg.substeps, wind=params.wind,
                    correctives=correctives, handle_idx=handles, handle_path=path, gravity=prob.gravity, solver=solver)


def frame_energies(S: torch.Tensor, prob: FitProblem, cfg: SftFitConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame energies (T−1,) for frames 1..T−1 of S, and their photometric / silhouette parts
    (all frames rendered in one batched pass)."""
    from physinv.core.raster import gaussian_blur, rasterize

    T = S.shape[0]
    out = rasterize(S[1:].float(), prob.faces, prob.world_to_camera, prob.intrinsics, prob.width, prob.height, uvs=prob.uvs.float(),
                    texture=prob.texture, sigma=cfg.raster_sigma, gamma=cfg.raster_gamma)
    photo = (out.rgb - prob.frames[1:T]).abs().mean(dim=(1, 2, 3))
    if cfg.silhouette:
        sil = (gaussian_blur(out.alpha, prob.blur_sigma) - prob.masks_blurred[1:T]).abs().mean(dim=(1, 2))
    else:
        sil = torch.zeros_like(photo)
    return photo + cfg.silhouette_weight * sil, photo, sil


class Window:
    """The adaptive temporal window's state (saved in checkpoints)."""

    def __init__(self, num_frames: int, cfg: SftFitConfig):
        self.num_frames = num_frames
        self.cfg = cfg
        self.latest = num_frames - 1 if not cfg.adaptive else min(num_frames - 1, cfg.window_start - 1)
        self.iters = 0
        self.threshold = float("nan")

    def update(self, energies: torch.Tensor) -> None:
        """After an iteration with per-frame energies of frames 1..latest: maybe add the next frame."""
        if not self.cfg.adaptive or self.latest >= self.num_frames - 1:
            return
        self.iters += 1
        latest_energy = float(energies[-1])
        reached = math.isfinite(self.threshold) and latest_energy < self.threshold
        if reached or self.iters >= self.cfg.max_iters_per_frame:
            if not math.isfinite(self.threshold):  # b: the fifth frame's energy when the sixth joins
                self.threshold = float(energies[min(self.cfg.window_start - 1, len(energies)) - 1])
            self.latest += 1
            self.iters = 0

    def state(self) -> dict:
        return {"latest": self.latest, "iters": self.iters, "threshold": self.threshold}

    def load(self, state) -> None:
        self.latest, self.iters, self.threshold = int(state["latest"]), int(state["iters"]), float(state["threshold"])


def run_fit(data: str | Path, out: str | Path, cfg: SftFitConfig, max_minutes: float | None = None, quiet: bool = False) -> dict:
    """Fit a sequence; writes ``<out>/meshes/0000.obj ...``, ``<out>/params.json``, log, checkpoint."""
    from physinv.config import config_to_dict
    from physinv.core.train import fit, seed_everything, select_device
    from physinv.sft.cloth import build_cloth
    from physinv.sft.data import load_sequence

    if cfg.steps < 0:
        raise PhysinvError(f"--steps: must be >= 0, got {cfg.steps}")
    if cfg.window_start < 2:
        raise PhysinvError(f"window_start: must be >= 2, got {cfg.window_start}")
    if cfg.solver not in ("auto", "dense", "sparse", "cg"):
        raise PhysinvError(f"solver: must be auto, dense, sparse or cg, got '{cfg.solver}'")
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    seq = load_sequence(data, cfg.max_frames or None)
    prob = prepare(seq, cfg, device)
    T, V = seq.num_frames, seq.vertices.shape[0]
    model = None if cfg.only_correctives else build_cloth(prob.vertices, prob.faces, prob.uvs)
    params = (OffsetParams(T, V) if cfg.only_correctives else PhysicsParams(T, V, int(prob.handles.numel()))).to(device)
    optim = torch.optim.Adam(params.parameters(), lr=cfg.lr)
    window = Window(T, cfg)
    out = Path(out)

    def step_fn(step: int) -> dict:
        optim.zero_grad(set_to_none=True)
        S = surfaces(params, prob, cfg, window.latest + 1, model)
        energies, photo, sil = frame_energies(S, prob, cfg)
        loss = energies.sum()
        if not torch.isfinite(loss):
            raise PhysinvError(f"sft fit: the energy became non-finite at step {step} (try more --substeps or a smaller --lr)")
        loss.backward()
        optim.step()
        window.update(energies.detach())
        return {"energy": loss.detach(), "photometric": photo.mean().detach(), "silhouette": sil.mean().detach(), "active_frames": window.latest + 1}

    result = fit(step_fn, run_dir=out, steps=cfg.steps, state={"params": params, "optim": optim}, max_minutes=max_minutes,
                 checkpoint_every=cfg.checkpoint_every, log_every=5, config=config_to_dict(cfg), extra_state=window.state,
                 load_extra_state=window.load, desc="sft fit", quiet=quiet)
    with torch.no_grad():
        S = surfaces(params, prob, cfg, T, model)
        energies, photo, sil = frame_energies(S, prob, cfg)
    write_result(out, S, seq, params, cfg, window)
    return {"steps": result.step, "stopped_by": result.stopped_by, "seconds": round(result.elapsed_s, 2), "frames": T, "vertices": V,
            "energy": float(energies.sum()), "energy_per_frame": energies.tolist(), "photometric": float(photo.mean()),
            "silhouette": float(sil.mean()), "active_frames": window.latest + 1, "method": "only_correctives" if cfg.only_correctives else "phi_sft"}


def write_result(out: Path, S: torch.Tensor, seq, params: nn.Module, cfg: SftFitConfig, window: Window) -> None:
    """meshes/0000.obj ... (with the template's UVs) and params.json (material, wind)."""
    from physinv.sft.data import write_obj

    faces, uvs = seq.faces.numpy(), seq.uvs.numpy()
    for t in range(S.shape[0]):
        write_obj(out / "meshes" / f"{t:04d}.obj", S[t].detach().cpu().numpy(), faces, uvs)
    info: dict = {"method": "only_correctives" if cfg.only_correctives else "phi_sft", "frames": int(S.shape[0]), "window": window.state()}
    if isinstance(params, PhysicsParams):
        with torch.no_grad():
            mat = params.material()
        info.update({"density": float(mat.density), "stretching": mat.stretching.tolist(), "bending": mat.bending.tolist(),
                     "wind": params.wind.tolist(), "corrective_rms": float(params.correctives.detach().square().mean().sqrt())})
    (out / "params.json").write_text(json.dumps(info, indent=2) + "\n")
