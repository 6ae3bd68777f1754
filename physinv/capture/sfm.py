"""From a COLMAP model or a folder of photos to a physinv data set.

``from_colmap``: read the model (:mod:`physinv.io.colmap`), then :func:`physinv.capture.scene.write_scene`.
``from_images``: structure from motion with ``pycolmap`` on the CPU: SIFT feature extraction,
matching (``exhaustive``: every pair, for up to a few hundred unordered photos; ``sequential``:
neighbours in name order, for video frames), incremental mapping; the largest model is kept and
converted as above. Each stage shows a progress line; the COLMAP work folder (database, models)
is kept under ``<out>/colmap``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from physinv.capture.scene import CaptureConfig, write_scene
from physinv.errors import PhysinvError, input_error
from physinv.io.colmap import read_reconstruction, reconstruction_to_transforms

MATCHERS = ("exhaustive", "sequential")
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_IMAGES = 3


@contextlib.contextmanager
def _stage(name: str, quiet: bool, timings: dict) -> Iterator[None]:
    """A spinner with the stage's name while it runs (COLMAP's own calls report no progress), and its time."""
    from rich.console import Console

    console = Console(stderr=True)
    t0 = time.perf_counter()
    if quiet:
        yield
    else:
        with console.status(f"[bold]{name}[/bold] ..."):
            yield
        console.print(f"{name}: done in {time.perf_counter() - t0:.1f} s")
    timings[name] = round(time.perf_counter() - t0, 3)


def _write(out: Path, rec, images_dir: Path, cfg: CaptureConfig, quiet: bool, timings: dict) -> dict:
    from rich.progress import Progress

    transforms, points = reconstruction_to_transforms(rec, images_dir, out / "transforms.json")
    colors = np.array([p.color for p in rec.points3D.values()], dtype=np.uint8).reshape(-1, 3) if len(points) else None
    t0 = time.perf_counter()
    with Progress(disable=quiet, transient=True) as progress:
        task = progress.add_task("writing the data set", total=len(transforms.frames))
        summary = write_scene(out, transforms, points, cfg, colors, on_frame=lambda i: progress.advance(task))
    timings["write"] = round(time.perf_counter() - t0, 3)
    return summary


def from_colmap(model_dir: str | Path, images_dir: str | Path, out: str | Path, cfg: CaptureConfig | None = None, quiet: bool = False) -> dict:
    """Convert an existing COLMAP model (binary or text) and its photos into a data set in ``out``."""
    cfg = cfg or CaptureConfig()
    cfg.check()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise input_error(images_dir, None, "image folder not found (--images)")
    rec = read_reconstruction(model_dir)
    timings: dict = {}
    summary = _write(Path(out), rec, images_dir, cfg, quiet, timings)
    return {**summary, "registered": summary["frames"], "seconds": timings}


def list_images(photos: Path) -> list[str]:
    """Image file names in ``photos`` (sorted); fewer than :data:`MIN_IMAGES` is a ``PhysinvError``."""
    if not photos.is_dir():
        raise input_error(photos, None, "photo folder not found")
    names = sorted(p.name for p in photos.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if len(names) < MIN_IMAGES:
        raise input_error(photos, None, f"found {len(names)} image(s); structure from motion needs at least {MIN_IMAGES}")
    return names


def run_sfm(photos: Path, work: Path, matcher: str = "exhaustive", camera_model: str = "SIMPLE_RADIAL", max_features: int = 8192, single_camera: bool = True, quiet: bool = False, timings: dict | None = None, seed: int = 0):
    """pycolmap feature extraction, matching and incremental mapping on the CPU -> the largest
    ``pycolmap.Reconstruction``. No model (nothing registers) is a ``PhysinvError`` naming ``photos``."""
    import pycolmap

    if matcher not in MATCHERS:
        raise PhysinvError(f"--matcher: expected one of {', '.join(MATCHERS)}, got '{matcher}'")
    if camera_model not in CAMERA_MODELS:
        raise PhysinvError(f"--camera-model: expected one of {', '.join(CAMERA_MODELS)}, got '{camera_model}'")
    timings = {} if timings is None else timings
    names = list_images(photos)
    # COLMAP's INFO log (a line per image and pair) would bury the stage progress: warnings and errors only
    work.mkdir(parents=True, exist_ok=True)
    pycolmap.logging.minloglevel = int(pycolmap.logging.Level.ERROR) if quiet else int(pycolmap.logging.Level.WARNING)
    work.mkdir(parents=True, exist_ok=True)
    database = work / "database.db"
    if database.exists():
        database.unlink()  # a fresh database: COLMAP would otherwise reuse stale features
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.use_gpu = False
    extraction.sift.max_num_features = max_features
    mode = pycolmap.CameraMode.SINGLE if single_camera else pycolmap.CameraMode.AUTO
    with _stage(f"feature extraction ({len(names)} images)", quiet, timings):
        pycolmap.extract_features(database, photos, image_names=names, camera_mode=mode, reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
    matching = pycolmap.FeatureMatchingOptions()
    matching.use_gpu = False
    with _stage(f"{matcher} matching", quiet, timings):
        if matcher == "exhaustive":
            pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
        else:
            pycolmap.match_sequential(database, matching_options=matching, device=pycolmap.Device.cpu)
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = seed
    sparse = work / "sparse"
    sparse.mkdir(exist_ok=True)
    with _stage("incremental mapping", quiet, timings):
        models = pycolmap.incremental_mapping(database, photos, sparse, options=options)
    if not models:
        raise input_error(photos, None, f"structure from motion found no model: none of the {len(names)} photos could be registered (too few matching features: more overlap, texture or photos needed)")
    best = max(models.values(), key=lambda r: r.num_reg_images())
    if best.num_reg_images() < 2:
        raise input_error(photos, None, "structure from motion registered fewer than 2 photos")
    best.write(str(sparse))  # the kept model at the top of the work folder
    return best, names


def from_images(photos: str | Path, out: str | Path, cfg: CaptureConfig | None = None, matcher: str = "exhaustive", camera_model: str = "SIMPLE_RADIAL", max_features: int = 8192, quiet: bool = False, seed: int = 0) -> dict:
    """``physinv data from-images``: SfM on ``photos`` then the data set in ``out``; summary dict."""
    cfg = cfg or CaptureConfig()
    cfg.check()
    photos, out = Path(photos), Path(out)
    timings: dict = {}
    rec, names = run_sfm(photos, out / "colmap", matcher, camera_model, max_features, quiet=quiet, timings=timings, seed=seed)
    summary = _write(out, rec, photos, cfg, quiet, timings)
    return {**summary, "images": len(names), "registered": int(rec.num_reg_images()), "points": int(rec.num_points3D()), "seconds": timings}
