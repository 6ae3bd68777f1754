"""``physinv data``: users' own captures -> physinv data sets (COLMAP, photos, masks, normalisation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from physinv.cli_common import ConfigFile, Quiet, Seed

app = typer.Typer(help="Users' own captures: photos or a COLMAP model -> a physinv data set.", no_args_is_help=True)

Masks = Annotated[Optional[Path], typer.Option("--masks", help="folder of masks, one per photo with the same stem (default: the photos' alpha, if any)")]
Undistort = Annotated[Optional[bool], typer.Option("--undistort/--distorted-rays", help="resample photos into pinhole images once, instead of the default: keep k1..p2 in transforms.json and distort the rays")]
Normalize = Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="centre and scale the region of interest into the unit cube/sphere (default: on)")]
Target = Annotated[Optional[str], typer.Option("--target", help="cube | sphere")]
Roi = Annotated[Optional[str], typer.Option("--roi", help="auto | points | cameras: what defines the region of interest")]
TestEvery = Annotated[Optional[int], typer.Option("--test-every", help="every k-th photo (by name) to transforms_test.json (0 = no test split)")]
MaxSize = Annotated[Optional[int], typer.Option("--max-size", help="downscale so the longer side is at most this many pixels (0 = keep)")]
Background = Annotated[Optional[str], typer.Option("--background", help="r,g,b in [0, 1]: what empty space renders as (default: white with masks, else black)")]


def _config(config: Optional[Path], **flags):
    from physinv.capture.scene import CaptureConfig
    from physinv.config import load_config

    overrides = {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items() if v is not None}
    if isinstance(overrides.get("background"), str):
        from physinv.errors import PhysinvError

        try:
            overrides["background"] = [float(c) for c in overrides["background"].split(",")]
        except ValueError:
            raise PhysinvError(f"--background: expected r,g,b in [0, 1], got '{flags['background']}'") from None
    return load_config(CaptureConfig, config, **overrides)


@app.command("from-colmap")
def from_colmap_cmd(
    model: Annotated[Path, typer.Argument(help="COLMAP model folder (cameras/images/points3D .bin or .txt; also finds 0/ or sparse/0/ below it)")],
    images: Annotated[Path, typer.Option("--images", help="folder of the photos the model names")],
    out: Annotated[Path, typer.Option("--out", help="output data folder")],
    masks: Masks = None, undistort: Undistort = None, normalize: Normalize = None, target: Target = None, roi: Roi = None,
    test_every: TestEvery = None, max_size: MaxSize = None, background: Background = None, config: ConfigFile = None, quiet: Quiet = False,
) -> None:
    """Convert a COLMAP model into transforms.json (OpenGL camera-to-world, per-camera intrinsics and distortion)."""
    from physinv.capture.sfm import from_colmap
    from physinv.io.runs import emit_metrics

    cfg = _config(config, masks=masks, undistort=undistort, normalize=normalize, target=target, roi=roi, test_every=test_every, max_size=max_size, background=background)
    emit_metrics(from_colmap(model, images, out, cfg, quiet=quiet), out)


@app.command("from-images")
def from_images_cmd(
    photos: Annotated[Path, typer.Argument(help="folder of photos")],
    out: Annotated[Path, typer.Option("--out", help="output data folder")],
    matcher: Annotated[str, typer.Option("--matcher", help="exhaustive | sequential")] = "exhaustive",
    camera_model: Annotated[str, typer.Option("--camera-model", help="SIMPLE_PINHOLE | PINHOLE | SIMPLE_RADIAL | RADIAL | OPENCV (one camera shared by all photos)")] = "SIMPLE_RADIAL",
    max_features: Annotated[int, typer.Option("--max-features", help="SIFT features per photo")] = 8192,
    masks: Masks = None, undistort: Undistort = None, normalize: Normalize = None, target: Target = None, roi: Roi = None,
    test_every: TestEvery = None, max_size: MaxSize = None, background: Background = None, config: ConfigFile = None, seed: Seed = 0, quiet: Quiet = False,
) -> None:
    """Structure from motion with pycolmap on the CPU (features, matching, incremental mapping), then as from-colmap."""
    from physinv.capture.sfm import from_images
    from physinv.io.runs import emit_metrics

    cfg = _config(config, masks=masks, undistort=undistort, normalize=normalize, target=target, roi=roi, test_every=test_every, max_size=max_size, background=background)
    emit_metrics(from_images(photos, out, cfg, matcher=matcher, camera_model=camera_model, max_features=max_features, quiet=quiet, seed=seed), out)


@app.command()
def normalize(
    data: Annotated[Path, typer.Argument(help="data folder with transforms*.json")],
    target: Annotated[str, typer.Option("--target", help="cube | sphere")] = "cube",
    roi: Annotated[str, typer.Option("--roi", help="auto | points | cameras")] = "auto",
) -> None:
    """Centre and scale a data set in place so its region of interest fits the unit cube/sphere; writes aabb and the transform."""
    from physinv.capture.scene import normalize_scene
    from physinv.io.runs import emit_metrics

    emit_metrics(normalize_scene(data, target, roi), None)


@app.command("unnormalize-mesh")
def unnormalize_mesh_cmd(
    mesh: Annotated[Path, typer.Argument(help="mesh exported from a run on a normalised data set")],
    data: Annotated[Path, typer.Option("--data", help="the normalised data folder")],
    out: Annotated[Path, typer.Option("--out", help="output mesh file in the capture's coordinates")],
) -> None:
    """Map a mesh back into the capture's original (COLMAP) coordinates with the recorded normalisation."""
    from physinv.capture.scene import unnormalize_mesh
    from physinv.io.runs import emit_metrics

    emit_metrics(unnormalize_mesh(mesh, data, out), None)


@app.command()
def mask(
    photos: Annotated[Path, typer.Argument(help="folder of photos on a uniform background")],
    out: Annotated[Path, typer.Option("--out", help="output folder of masks (<stem>.png, white = object)")],
    method: Annotated[str, typer.Option("--method", help="key (colour key) | grabcut (OpenCV GrabCut started from the key)")] = "key",
    key: Annotated[Optional[str], typer.Option("--key", help="background colour r,g,b in [0, 1] (default: each photo's border median)")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="RGB distance from the key counted as background")] = 0.1,
) -> None:
    """Masks for photos taken on a uniform background (no downloaded weights)."""
    import numpy as np

    from physinv.capture.masks import compute_mask
    from physinv.capture.sfm import IMAGE_EXTS
    from physinv.errors import PhysinvError, input_error
    from physinv.io.images import read_image, write_image
    from physinv.io.runs import emit_metrics

    if not photos.is_dir():
        raise input_error(photos, None, "photo folder not found")
    key_rgb = None
    if key is not None:
        try:
            key_rgb = np.array([float(v) for v in key.split(",")], dtype=np.float32)
        except ValueError:
            key_rgb = np.zeros(0)
        if key_rgb.shape != (3,):
            raise PhysinvError(f"--key: expected r,g,b (three numbers in [0, 1]), got '{key}'")
    names = sorted(p for p in photos.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not names:
        raise input_error(photos, None, "no images in this folder")
    cover = []
    for p in names:
        img = read_image(p)
        img = np.repeat(img, 3, -1) if img.shape[-1] == 1 else img[..., :3]
        m = compute_mask(img, method, key_rgb, tolerance)
        write_image(out / f"{p.stem}.png", m)
        cover.append(float(m.mean()))
    emit_metrics({"masks": len(names), "method": method, "mean_coverage": float(np.mean(cover)), "out": str(out)}, None)
