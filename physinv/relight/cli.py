"""``physinv relight``: fit PhySG or NeRD, evaluate relighting, render under any light, edit, export; fit SG lights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from physinv.cli_common import ConfigFile, Device, MaxMinutes, OptionalSeed, Quiet, Steps
from physinv.config import load_config
from physinv.core.train import select_device
from physinv.errors import PhysinvError, input_error
from physinv.io.runs import emit_metrics

app = typer.Typer(no_args_is_help=True, help="NeRD / PhySG decomposition and relighting.")

RunArg = Annotated[Path, typer.Argument(help="run folder written by `physinv relight fit`")]
EnvmapOpt = Annotated[Optional[Path], typer.Option("--envmap", help="equirectangular HDR map (.exr/.hdr, 2:1) to light the object with")]


def _run(run: Path, device: str):
    from physinv.relight.api import load_run

    return load_run(run, select_device(device))


@app.command()
def fit(
    data: Annotated[Path, typer.Argument(help="data folder with transforms_train.json, masks (alpha or mask_path)")],
    out: Annotated[Path, typer.Option("--out", help="run folder (checkpoint, log, metrics); an existing run resumes")],
    method: Annotated[str, typer.Option("--method", help="physg (one light) | nerd (varying light: frames' `light` tie illuminations)")] = "physg",
    preset: Annotated[Optional[str], typer.Option("--preset", help="small (2 CPU cores, default) | full (the paper's network sizes)")] = None,
    lobes: Annotated[Optional[int], typer.Option("--lobes", help="SGs per environment light (PhySG 128, NeRD 24)")] = None,
    steps: Steps = None,
    max_minutes: MaxMinutes = None,
    batch_rays: Annotated[Optional[int], typer.Option("--batch-rays", help="rays per step")] = None,
    encoding: Annotated[Optional[str], typer.Option("--encoding", help="NeRD's networks: frequency (the paper's Fourier features, default) | hashgrid (the faster hash-grid variant)")] = None,
    device: Device = "auto",
    seed: OptionalSeed = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
) -> None:
    """Fit shape, materials and SG light(s) to posed, masked images: PhySG under one light, NeRD under varying light."""
    from physinv.relight.config import RelightConfig
    from physinv.relight.train import train

    if not data.is_dir():
        raise input_error(data, None, "data folder not found")
    cfg = load_config(RelightConfig, config, method=method, preset=preset, lobes=lobes, steps=steps, batch_rays=batch_rays, encoding=encoding, seed=seed)
    result = train(data, out, cfg, device=select_device(device), max_minutes=max_minutes, quiet=quiet)
    emit_metrics({
        "method": result.config.method, "step": result.fit.step, "stopped_by": result.fit.stopped_by,
        "train_seconds": round(result.fit.elapsed_s, 2), "train_psnr": result.train_psnr,
        "roughness": result.fit.last.get("roughness"), "specular": result.fit.last.get("specular"), "kept_step": result.kept_step, "roughness_restart_step": result.roughness_restart_step,
    }, out)


@app.command("eval")
def eval_cmd(
    run: RunArg,
    data: Annotated[Optional[Path], typer.Option("--data", help="data folder (default: the run's)")] = None,
    split: Annotated[str, typer.Option("--split", help="split to relight and score (its frames' `light` name the maps)")] = "test",
    device: Device = "auto",
) -> None:
    """Relight every view of a split under its own environment map; masked, aligned PSNR/SSIM etc. (one JSON line)."""
    from physinv.relight.api import evaluate

    r = _run(run, device)
    data = data or r.data
    if data is None:
        raise PhysinvError("--data: the run does not record its data folder; pass --data")
    emit_metrics(evaluate(r, data, split), run)


@app.command()
def render(
    run: RunArg,
    out: Annotated[Path, typer.Option("--out", help="folder for the PNGs and the GIF")],
    envmap: EnvmapOpt = None,
    orbit: Annotated[int, typer.Option("--orbit", help="frames of an orbit (when no --data)")] = 24,
    elevation: Annotated[float, typer.Option("--elevation", help="orbit elevation, degrees")] = 25.0,
    data: Annotated[Optional[Path], typer.Option("--data", help="render this data set's poses instead of an orbit")] = None,
    split: Annotated[str, typer.Option("--split")] = "test",
    exposure: Annotated[float, typer.Option("--exposure", help="radiance multiplier before display encoding")] = 1.0,
    light: Annotated[Optional[str], typer.Option("--light", help="NeRD: the learnt illumination of this training `light` name")] = None,
    device: Device = "auto",
) -> None:
    """Render the object under any light (default: the fitted one, NeRD's first) from any pose."""
    from physinv.relight.render import cameras, light_for, render_set

    r = _run(run, device)
    light, info = light_for(r, envmap, data, light)
    poses, intr, w, h = cameras(r, data, split, orbit, elevation)
    emit_metrics({**render_set(r, out, poses, intr, w, h, light, exposure), **info}, None)


@app.command()
def edit(
    run: RunArg,
    out: Annotated[Path, typer.Option("--out", help="folder for the edited renders")],
    albedo: Annotated[Optional[str], typer.Option("--albedo", help="R,G,B diffuse albedo in [0, 1] for the whole object")] = None,
    roughness: Annotated[Optional[float], typer.Option("--roughness", help="GGX roughness in (0, 1]")] = None,
    specular: Annotated[Optional[float], typer.Option("--specular", help="specular albedo F0 in [0, 1] (PhySG)")] = None,
    metallic: Annotated[Optional[float], typer.Option("--metallic", help="Disney metallic in [0, 1] (NeRD)")] = None,
    envmap: EnvmapOpt = None,
    orbit: Annotated[int, typer.Option("--orbit", help="frames of the orbit")] = 24,
    device: Device = "auto",
) -> None:
    """Render the object with an edited material (albedo / base colour, roughness, specular or metallic) under the fitted or a given light."""
    import torch

    from physinv.relight.render import cameras, light_for, render_set

    if albedo is None and roughness is None and specular is None and metallic is None:
        raise PhysinvError("relight edit: give at least one of --albedo, --roughness, --specular, --metallic")
    r = _run(run, device)
    if specular is not None and r.method == "nerd":
        raise PhysinvError("--specular: a NeRD run has no separate specular albedo (use --metallic, --roughness)")
    if metallic is not None and r.method != "nerd":
        raise PhysinvError("--metallic: a PhySG run has no metallic parameter (use --specular)")
    overrides = {}
    if albedo is not None:
        try:
            rgb = [float(v) for v in albedo.split(",")]
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
            raise PhysinvError(f"--albedo: expected R,G,B in [0, 1], got '{albedo}'")
        overrides["albedo"] = torch.tensor([rgb], device=r.device)
    if roughness is not None:
        if not 0.0 < roughness <= 1.0:
            raise PhysinvError(f"--roughness: must be in (0, 1], got {roughness}")
        overrides["roughness"] = torch.tensor([[roughness]], device=r.device)
    if specular is not None:
        if not 0.0 <= specular <= 1.0:
            raise PhysinvError(f"--specular: must be in [0, 1], got {specular}")
        overrides["specular"] = torch.tensor([[specular]], device=r.device)
    if metallic is not None:
        if not 0.0 <= metallic <= 1.0:
            raise PhysinvError(f"--metallic: must be in [0, 1], got {metallic}")
        overrides["metallic"] = torch.tensor([[metallic]], device=r.device)
    light, info = light_for(r, envmap)
    poses, intr, w, h = cameras(r, None, "test", orbit, 25.0)
    result = render_set(r, out, poses, intr, w, h, light, prefix="edit", **overrides)
    emit_metrics({**result, **info, "edit": {k: v.flatten().tolist() for k, v in overrides.items()}}, None)


@app.command()
def export(
    run: RunArg,
    out: Annotated[Path, typer.Option("--out", help="mesh file: .glb, .ply or .obj (the SG light goes beside it)")],
    res: Annotated[int, typer.Option("--res", help="marching-cubes lattice per axis over the unit sphere's cube")] = 128,
    level: Annotated[Optional[float], typer.Option("--level", help="NeRD: density level of the surface (per normalised unit; default 10)")] = None,
    device: Device = "auto",
) -> None:
    """Marching cubes of the SDF (PhySG) or density (NeRD) with albedo / base-colour vertex colours, plus the SG light(s) as JSON and EXR."""
    from physinv.relight.render import export_mesh

    if level is not None and not level > 0:
        raise PhysinvError(f"--level: must be > 0, got {level}")
    emit_metrics(export_mesh(_run(run, device), out, res, level), None)


@app.command("fit-envmap")
def fit_envmap(
    envmap: Annotated[Path, typer.Argument(help="equirectangular HDR map (.exr/.hdr, 2:1)")],
    out: Annotated[Path, typer.Option("--out", help="light JSON file (an .exr of the SG light is written beside it)")],
    lobes: Annotated[int, typer.Option("--lobes", help="number of SGs")] = 128,
    steps: Annotated[int, typer.Option("--steps", help="gradient steps")] = 500,
    device: Device = "auto",
) -> None:
    """Fit K spherical Gaussians to an HDR map; prints the relative L2 and writes the light (JSON + EXR)."""
    import torch

    from physinv.core import sg
    from physinv.relight.api import write_light
    from physinv.relight.data import read_envmap

    if lobes < 1 or steps < 0:
        raise PhysinvError(f"--lobes must be >= 1 and --steps >= 0 (got {lobes}, {steps})")
    if out.suffix.lower() != ".json":
        raise input_error(out, None, "expected a .json file name for the light")
    image = read_envmap(envmap)
    dev = select_device(device)
    light, rel = sg.fit_envmap(torch.as_tensor(image, device=dev), lobes=lobes, steps=steps)  # the map's own frame
    eye = torch.eye(3, device=dev)
    json_path, exr_path = write_light(light, out.with_suffix(""), height=image.shape[0], to_world=eye)
    emit_metrics({"relative_l2": rel, "lobes": lobes, "light_json": str(json_path), "light_exr": str(exr_path)}, None)
