"""Write a capture (posed frames + sparse points) as a physinv data set; shared by
``physinv data from-colmap`` and ``physinv data from-images``, and ``physinv data normalize``.

Output folder::

    transforms.json            every frame (nerfstudio dialect: per-frame intrinsics and k1..p2)
    transforms_train.json      } with test_every > 0: every test_every-th frame (sorted by name)
    transforms_test.json       } goes to the test split
    images/<name>              the photos (copied, or rewritten as RGBA PNG when masked,
                               undistorted or resized)
    masks/<stem>.png           the masks, when there are any (also the images' alpha)
    sparse_pc.ply              sparse points (``ply_file_path``), in the data set's coordinates

Lens distortion: by default the coefficients are written into transforms.json and the rays are
distorted when generated (:func:`physinv.core.camera.camera_rays`; exact, every pixel kept, no
resampling); ``undistort=True`` resamples each photo once into a pinhole image
(:mod:`physinv.capture.undistort`) for tools that only know pinhole cameras.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from physinv.capture.masks import find_mask, read_mask
from physinv.capture.normalize import ROI_SOURCES, TARGETS, fit_normalization, normalize_transforms, read_points, region_of_interest, write_points
from physinv.capture.undistort import undistort_image
from physinv.errors import PhysinvError, input_error
from physinv.io.images import read_image, write_image
from physinv.io.transforms import Frame, Transforms, read_transforms, write_transforms

POINTS_NAME = "sparse_pc.ply"


@dataclass
class CaptureConfig:
    """Options of the converters (``physinv data from-colmap`` / ``from-images``).

    masks: folder of user masks (one per photo, same stem) or None (the photos' alpha, if any);
    undistort: resample photos into pinhole images instead of writing the distortion coefficients;
    normalize: put the region of interest into the unit cube/sphere (``target``, ``roi`` as in
    :mod:`physinv.capture.normalize`); test_every: every k-th frame to the test split (0 = none);
    max_size: downscale so the longer image side is at most this many pixels (0 = keep);
    background: the data set's ``background`` [r, g, b] in [0, 1] (what empty space renders as,
    and what masked photos are composited on); None = white when there are masks, else black.
    """

    masks: Optional[str] = None
    undistort: bool = False
    normalize: bool = True
    target: str = "cube"
    roi: str = "auto"
    test_every: int = 0
    max_size: int = 0
    background: Optional[list[float]] = None

    def check(self) -> None:
        if self.background is not None and (len(self.background) != 3 or not all(0.0 <= float(c) <= 1.0 for c in self.background)):
            raise PhysinvError(f"--background: expected r,g,b in [0, 1], got {self.background}")
        if self.target not in TARGETS:
            raise PhysinvError(f"--target: expected one of {', '.join(TARGETS)}, got '{self.target}'")
        if self.roi not in ROI_SOURCES:
            raise PhysinvError(f"--roi: expected one of {', '.join(ROI_SOURCES)}, got '{self.roi}'")
        if self.test_every < 0 or self.test_every == 1:
            raise PhysinvError(f"--test-every: expected 0 (no test split) or >= 2, got {self.test_every}")
        if self.max_size < 0:
            raise PhysinvError(f"--max-size: expected >= 0, got {self.max_size}")
        if self.masks is not None and not Path(self.masks).is_dir():
            raise input_error(self.masks, None, "mask folder not found (--masks)")


def _resize(array: np.ndarray, width: int, height: int, nearest: bool = False) -> np.ndarray:
    import cv2

    return cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def convert_frame(frame: Frame, out_dir: Path, cfg: CaptureConfig) -> Frame:
    """Copy or rewrite one photo (and its mask) into ``out_dir``; the frame as written."""
    src = Path(frame.image_path)
    stem = src.stem
    intrinsics, distortion, width, height = np.array(frame.intrinsics, dtype=np.float64), frame.distortion, frame.width, frame.height
    needs_undistort = cfg.undistort and distortion is not None
    scale = cfg.max_size / max(width, height) if cfg.max_size and max(width, height) > cfg.max_size else 1.0
    mask_src = find_mask(cfg.masks, src.name) if cfg.masks else None
    extras = dict(frame.extras)
    if mask_src is None and not needs_undistort and scale == 1.0:
        dst = out_dir / "images" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dst.resolve():
            shutil.copy2(src, dst)
        return Frame(dst, frame.c2w, intrinsics, width, height, extras, distortion)

    image = read_image(src)
    if image.shape[:2] != (height, width):
        raise input_error(src, None, f"image is {image.shape[1]}x{image.shape[0]} but its camera is {width}x{height}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, -1)
    mask = read_mask(mask_src, width, height) if mask_src is not None else (image[..., 3] if image.shape[-1] == 4 else None)
    rgb = image[..., :3]
    if needs_undistort:
        rgb, new_k = undistort_image(rgb, intrinsics, distortion)
        if mask is not None:
            mask, _ = undistort_image(mask, intrinsics, distortion)
        intrinsics, distortion = new_k, None
    if scale != 1.0:
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        # the corner-origin pixel convention makes intrinsics scale with the image exactly
        intrinsics = intrinsics * np.array([new_w / width, new_h / height, new_w / width, new_h / height])
        rgb = _resize(rgb, new_w, new_h)
        mask = None if mask is None else _resize(mask, new_w, new_h)
        width, height = new_w, new_h
    dst = out_dir / "images" / f"{stem}.png"
    if mask is not None:
        write_image(dst, np.concatenate([rgb, np.clip(mask, 0, 1)[..., None]], -1))
        extras["mask_path"] = write_image(out_dir / "masks" / f"{stem}.png", np.clip(mask, 0, 1))
    else:
        write_image(dst, rgb)
    return Frame(dst, frame.c2w, intrinsics, width, height, extras, distortion)


def write_scene(
    out_dir: str | Path,
    transforms: Transforms,
    points: np.ndarray | None,
    cfg: CaptureConfig,
    colors: np.ndarray | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> dict:
    """Convert every frame (:func:`convert_frame`), normalise (``cfg``), write the json files and the
    sparse points. ``on_frame(i)`` is called after each frame (progress). Returns a summary dict."""
    cfg.check()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, f in enumerate(transforms.frames):
        frames.append(convert_frame(f, out_dir, cfg))
        if on_frame is not None:
            on_frame(i)
    extras = dict(transforms.extras)
    if cfg.background is not None:
        extras["background"] = [float(c) for c in cfg.background]
    extras.setdefault("background", [1.0, 1.0, 1.0] if any("mask_path" in f.extras for f in frames) else [0.0, 0.0, 0.0])
    scene = Transforms(out_dir / "transforms.json", frames, extras)
    summary: dict = {"frames": len(frames), "points": 0 if points is None else int(len(points)), "distortion": "undistorted" if cfg.undistort else "rays"}
    if cfg.normalize:
        centre, half, source = region_of_interest(np.stack([f.c2w for f in frames]), points, cfg.roi)
        norm = fit_normalization(centre, half, cfg.target)
        scene = normalize_transforms(scene, norm)
        points = None if points is None else norm.apply(points)
        summary.update({"roi": source, "normalization": scene.extras["normalization"]})
    if points is not None and len(points):
        scene.extras["ply_file_path"] = write_points(out_dir / POINTS_NAME, points, colors)
    _write_splits(scene, cfg.test_every)
    summary["out"] = str(out_dir)
    return summary


def _write_splits(scene: Transforms, test_every: int) -> None:
    out_dir = scene.path.parent
    write_transforms(out_dir / "transforms.json", scene, dialect="nerfstudio")
    if test_every:
        test = [f for i, f in enumerate(scene.frames) if i % test_every == test_every - 1]
        train = [f for i, f in enumerate(scene.frames) if i % test_every != test_every - 1]
        write_transforms(out_dir / "transforms_train.json", Transforms(out_dir / "transforms_train.json", train, scene.extras), dialect="nerfstudio")
        write_transforms(out_dir / "transforms_test.json", Transforms(out_dir / "transforms_test.json", test, scene.extras), dialect="nerfstudio")


def normalize_scene(data_dir: str | Path, target: str = "cube", roi: str = "auto") -> dict:
    """``physinv data normalize``: one similarity, computed from ``transforms.json`` (else the train
    split) and its sparse points, applied to every ``transforms*.json`` of the folder and to the
    points; each file keeps its dialect and gains ``aabb`` and the composed ``normalization``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise input_error(data_dir, None, "data folder not found")
    files = sorted(data_dir.glob("transforms*.json"))
    if not files:
        raise input_error(data_dir, None, "no transforms*.json in this folder")
    main = data_dir / "transforms.json" if (data_dir / "transforms.json").is_file() else (data_dir / "transforms_train.json" if (data_dir / "transforms_train.json").is_file() else files[0])
    parsed = {p: read_transforms(p) for p in files}
    reference = parsed[main]
    ply = reference.extras.get("ply_file_path")
    ply_path = None if not isinstance(ply, str) else (Path(ply) if Path(ply).is_absolute() else data_dir / ply)
    points = read_points(ply_path) if ply_path is not None else None
    centre, half, source = region_of_interest(np.stack([f.c2w for f in reference.frames]), points, roi)
    norm = fit_normalization(centre, half, target)
    for p, t in parsed.items():
        out = normalize_transforms(t, norm)
        dialect = out.extras.pop("dialect", "nerfstudio")
        if ply_path is not None and "ply_file_path" in out.extras:
            out.extras["ply_file_path"] = ply_path
        write_transforms(p, out, dialect=dialect)
    if points is not None:
        write_points(ply_path, norm.apply(points))
    return {"files": [f.name for f in files], "roi": source, "normalization": norm.to_json(), "composed": read_transforms(main).extras["normalization"]}


def unnormalize_mesh(mesh_path: str | Path, data_dir: str | Path, out_path: str | Path) -> dict:
    """Map a mesh exported from a run on a normalised data set back into the capture's coordinates."""
    from physinv.capture.normalize import Normalization
    from physinv.io.mesh import load_mesh, save_mesh
    from physinv.io.transforms import split_path

    path = split_path(data_dir, "train")
    t = read_transforms(path)
    if "normalization" not in t.extras:
        raise input_error(path.name, "normalization", "missing (the data set was not normalised)")
    norm = Normalization.from_json(t.extras["normalization"], f"{path.name}: normalization")
    mesh = load_mesh(mesh_path)
    save_mesh(out_path, norm.invert(np.asarray(mesh.vertices)), mesh.faces)
    return {"mesh": str(out_path), "vertices": int(len(mesh.vertices)), "scale": norm.scale}
