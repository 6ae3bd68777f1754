"""``transforms.json`` in the three dialects in use: Blender (NeRF synthetic), instant-ngp and nerfstudio.

All three store camera-to-world matrices in the OpenGL convention (+x right, +y up, camera looks
along -z), the convention of :mod:`physinv.core.camera`; they differ in how intrinsics and paths are
written:

* **blender**: top-level ``camera_angle_x`` (horizontal field of view, radians), square pixels,
  centred principal point; ``file_path`` often without extension (``./train/r_0`` -> ``r_0.png``).
* **ngp** (instant-ngp): top-level ``fl_x, fl_y, cx, cy, w, h`` (pixels) and ``aabb_scale``;
  ``file_path`` with extension.
* **nerfstudio**: the same keys, optionally per frame (per-frame values win), ``file_path`` with
  extension, optional ``mask_path`` per frame, ``camera_model``.

Lens distortion (nerfstudio's ``k1, k2, k3, k4, p1, p2``, top level or per frame, per-frame values
winning) is read into :attr:`Frame.distortion` in the order and model of
:mod:`physinv.core.camera`; a frame without any coefficient (or all zero) is a pinhole camera
(``None``). ``camera_model`` ``OPENCV_FISHEYE`` / ``EQUIRECTANGULAR`` are refused: their
coefficients mean something else.

Intrinsics are resolved per frame in this order: frame ``fl_x/fl_y/cx/cy/w/h``, top-level ones,
``camera_angle_x`` (+ ``camera_angle_y``); width/height come from the file or, if absent, from the
image header. Paths are resolved against the folder holding the json file.

Every malformed field raises :class:`~physinv.errors.PhysinvError` as one line naming the file and
the field, e.g. ``transforms_train.json: frames[3].transform_matrix: expected a 4x4 matrix``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from physinv.errors import PhysinvError, input_error

DIALECTS = ("blender", "ngp", "nerfstudio")
# per-frame optional fields holding paths (resolved to absolute Paths on read)
FRAME_PATH_KEYS = ("mask_path", "albedo_path", "normal_path", "depth_path", "instance_path")
# keys this module interprets itself (everything else is carried through ``extras``)
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
# nerfstudio's distortion coefficients, in the order of physinv.core.camera
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_TOP_CAMERA_KEYS = ("camera_angle_x", "camera_angle_y", *_INTRINSIC_KEYS, *DISTORTION_KEYS, "frames")
_FRAME_CAMERA_KEYS = ("file_path", "transform_matrix", *_INTRINSIC_KEYS, *DISTORTION_KEYS)
_UNSUPPORTED_CAMERA_MODELS = ("OPENCV_FISHEYE", "EQUIRECTANGULAR", "FISHEYE")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".webp", ".bmp")


@dataclass
class Frame:
    """One view.

    image_path: absolute path of the image; c2w: (4, 4) float64 camera-to-world (OpenGL axes);
    intrinsics: (4,) float64 ``(fx, fy, cx, cy)`` in pixels; width/height in pixels;
    extras: optional per-frame fields (``mask_path`` ... ``instance_path`` as absolute Paths,
    ``light`` as str, and any other key of the file, unchanged);
    distortion: None (pinhole) or (6,) float64 ``(k1, k2, k3, k4, p1, p2)`` (:mod:`physinv.core.camera`).
    """

    image_path: Path
    c2w: np.ndarray
    intrinsics: np.ndarray
    width: int
    height: int
    extras: dict = field(default_factory=dict)
    distortion: np.ndarray | None = None


@dataclass
class Transforms:
    """A parsed ``transforms.json``: its path, frames, and top-level extras
    (``aabb_scale``, ``aabb`` [[x,y,z],[x,y,z]], ``envmaps`` (list of dicts whose ``file_path`` is an
    absolute Path), ``envmap_to_world`` ((3, 3) float64 rotation of the maps' local frame, Mitsuba's
    equirectangular convention, into the world), ``background`` [r,g,b], ``objects`` (physinv.synth: [{id, name, mesh (absolute Path),
    material}]), ``dialect`` (as detected on read), and any other key)."""

    path: Path
    frames: list[Frame]
    extras: dict = field(default_factory=dict)


def light_file(base: Path, light: str) -> Path:
    """The path a frame's ``light`` names when it is not an ``envmaps`` entry: relative to the data folder."""
    p = Path(light)
    return Path(os.path.normpath(p if p.is_absolute() else Path(base) / p))


def split_path(data_dir: str | Path, split: str) -> Path:
    """``<data_dir>/transforms_<split>.json`` if present, else ``<data_dir>/transforms.json``.

    ``data_dir`` may also be a json file, which is returned as it is.
    """
    data_dir = Path(data_dir)
    if data_dir.is_file():
        return data_dir
    if not data_dir.is_dir():
        raise input_error(data_dir, None, "data folder not found")
    candidate = data_dir / f"transforms_{split}.json"
    if candidate.is_file():
        return candidate
    fallback = data_dir / "transforms.json"
    if fallback.is_file():
        return fallback
    raise input_error(data_dir, None, f"no transforms_{split}.json or transforms.json in this folder")


# ----------------------------------------------------------------------------------------------
# reading


def _number(value: Any, name: str, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise input_error(where, name, f"expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise input_error(where, name, f"expected a positive number, got {value!r}")
    return float(value)


def _matrix(value: Any, name: str, where: str) -> np.ndarray:
    try:
        mat = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise input_error(where, name, "expected a 4x4 matrix") from None
    if mat.shape == (3, 4):  # some writers drop the constant last row
        mat = np.vstack([mat, [0.0, 0.0, 0.0, 1.0]])
    if mat.shape != (4, 4):
        raise input_error(where, name, "expected a 4x4 matrix")
    if not np.all(np.isfinite(mat)):
        raise input_error(where, name, "matrix has non-finite entries")
    if abs(np.linalg.det(mat[:3, :3])) < 1e-12:
        raise input_error(where, name, "rotation part is singular")
    return mat


def resolve_image(base: Path, file_path: str) -> Path:
    """``file_path`` relative to ``base``; a path without an extension tries the usual ones (``.png`` first)."""
    path = Path(file_path)
    path = path if path.is_absolute() else base / path
    path = Path(os.path.normpath(path))
    if path.is_file():
        return path
    if path.suffix.lower() not in _IMAGE_EXTS:
        for ext in _IMAGE_EXTS:
            candidate = path.with_name(path.name + ext)
            if candidate.is_file():
                return candidate
        return path.with_name(path.name + ".png")  # the Blender convention, even when missing
    return path


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) from the image header (no full decode for PNG/JPEG)."""
    if not path.is_file():
        raise input_error(where, None, f"image not found: {path}")
    try:
        if path.suffix.lower() == ".exr":
            from physinv.io.hdr import read_hdr

            h, w = read_hdr(path).shape[:2]
            return w, h
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except PhysinvError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise input_error(path, None, f"cannot read image ({type(err).__name__}: {err})") from None


def _detect_dialect(data: dict) -> str:
    frames = data.get("frames") or []
    per_frame = any(isinstance(f, dict) and any(k in f for k in _INTRINSIC_KEYS) for f in frames)
    if per_frame or "camera_model" in data:
        return "nerfstudio"
    if "fl_x" in data:
        return "ngp"
    return "blender"


def read_transforms(path: str | Path) -> Transforms:
    """Parse a transforms.json of any of the three dialects (see the module docstring)."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise input_error(path, None, "file not found")
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise input_error(name, None, "not a text file") from None
    except json.JSONDecodeError as err:
        raise input_error(name, None, f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise input_error(name, None, "expected a JSON object at the top level")
    frames_raw = data.get("frames")
    if frames_raw is None:
        raise input_error(name, "frames", "missing")
    if not isinstance(frames_raw, list) or not frames_raw:
        raise input_error(name, "frames", "expected a non-empty list")
    base = path.parent.resolve()

    top = {k: _number(data[k], k, name, positive=k not in ("cx", "cy")) for k in _INTRINSIC_KEYS if k in data}
    top.update({k: _number(data[k], k, name) for k in DISTORTION_KEYS if k in data})
    model = data.get("camera_model")
    if isinstance(model, str) and model.upper() in _UNSUPPORTED_CAMERA_MODELS:
        raise input_error(name, "camera_model", f"{model} is not supported (physinv models pinhole cameras with radial-tangential distortion)")
    for k in ("camera_angle_x", "camera_angle_y"):
        if k in data:
            top[k] = _number(data[k], k, name, positive=True)
            if top[k] >= math.pi:
                raise input_error(name, k, f"expected an angle in radians below pi, got {top[k]}")

    frames = []
    for i, raw in enumerate(frames_raw):
        where = f"frames[{i}]"
        if not isinstance(raw, dict):
            raise input_error(name, where, "expected an object")
        if "file_path" not in raw:
            raise input_error(name, f"{where}.file_path", "missing")
        if not isinstance(raw["file_path"], str) or not raw["file_path"]:
            raise input_error(name, f"{where}.file_path", "expected a non-empty string")
        if "transform_matrix" not in raw:
            raise input_error(name, f"{where}.transform_matrix", "missing")
        c2w = _matrix(raw["transform_matrix"], f"{where}.transform_matrix", name)
        image_path = resolve_image(base, raw["file_path"])
        cam = dict(top)
        for k in _INTRINSIC_KEYS:
            if k in raw:
                cam[k] = _number(raw[k], f"{where}.{k}", name, positive=k not in ("cx", "cy"))
        for k in DISTORTION_KEYS:
            if k in raw:
                cam[k] = _number(raw[k], f"{where}.{k}", name)
        coeffs = np.array([cam.get(k, 0.0) for k in DISTORTION_KEYS], dtype=np.float64)
        distortion = coeffs if np.any(coeffs != 0.0) else None
        if "w" in cam and "h" in cam:
            width, height = int(round(cam["w"])), int(round(cam["h"]))
        else:
            width, height = image_size(image_path, f"{name}: {where}.file_path")
        if "fl_x" in cam:
            fx = cam["fl_x"]
            fy = cam.get("fl_y", fx)
        elif "camera_angle_x" in cam:
            fx = 0.5 * width / math.tan(0.5 * cam["camera_angle_x"])
            fy = 0.5 * height / math.tan(0.5 * cam["camera_angle_y"]) if "camera_angle_y" in cam else fx
        else:
            raise input_error(name, "camera_angle_x", "missing (and no fl_x at the top level or in " + where + ")")
        intrinsics = np.array([fx, fy, cam.get("cx", 0.5 * width), cam.get("cy", 0.5 * height)], dtype=np.float64)
        extras: dict[str, Any] = {}
        for k, v in raw.items():
            if k in _FRAME_CAMERA_KEYS:
                continue
            if k in FRAME_PATH_KEYS:
                if not isinstance(v, str) or not v:
                    raise input_error(name, f"{where}.{k}", "expected a non-empty string")
                p = Path(v)
                extras[k] = Path(os.path.normpath(p if p.is_absolute() else base / p))
            elif k == "light":
                if not isinstance(v, str):
                    raise input_error(name, f"{where}.light", "expected a string (an envmaps name)")
                extras[k] = v
            else:
                extras[k] = v
        frames.append(Frame(image_path, c2w, intrinsics, width, height, extras, distortion))

    extras = {k: v for k, v in data.items() if k not in _TOP_CAMERA_KEYS}
    extras["dialect"] = _detect_dialect(data)
    _check_top_extras(extras, name, base)
    names = {e["name"] for e in extras.get("envmaps", [])}
    for i, f in enumerate(frames):
        light = f.extras.get("light")
        if light is not None and names and light not in names and not light_file(base, light).is_file():
            raise input_error(name, f"frames[{i}].light", f"'{light}' is not in envmaps ({', '.join(sorted(names))}) nor an .exr/.hdr file in {base}")
    return Transforms(path=path, frames=frames, extras=extras)


def _check_top_extras(extras: dict, name: str, base: Path) -> None:
    if "aabb" in extras:
        try:
            aabb = np.asarray(extras["aabb"], dtype=np.float64)
        except (TypeError, ValueError):
            aabb = np.zeros(0)
        if aabb.shape != (2, 3) or not np.all(np.isfinite(aabb)) or np.any(aabb[1] <= aabb[0]):
            raise input_error(name, "aabb", "expected [[xmin, ymin, zmin], [xmax, ymax, zmax]] with max > min")
    if "background" in extras:
        bg = extras["background"]
        if not (isinstance(bg, list) and len(bg) == 3 and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in bg)):
            raise input_error(name, "background", "expected [r, g, b] in [0, 1]")
    if "aabb_scale" in extras:
        _number(extras["aabb_scale"], "aabb_scale", name, positive=True)
    if "envmap_to_world" in extras:
        try:
            m = np.asarray(extras["envmap_to_world"], dtype=np.float64)
        except (TypeError, ValueError):
            m = np.zeros(0)
        if m.shape not in ((3, 3), (4, 4)) or not np.all(np.isfinite(m)):
            raise input_error(name, "envmap_to_world", "expected a 3x3 or 4x4 matrix (the env maps' local frame to world)")
        rot = m[:3, :3]
        if np.abs(rot @ rot.T - np.eye(3)).max() > 1e-4:
            raise input_error(name, "envmap_to_world", "its 3x3 part must be a rotation (orthonormal rows)")
        extras["envmap_to_world"] = rot
    if "envmaps" in extras:
        envmaps = extras["envmaps"]
        if not isinstance(envmaps, list):
            raise input_error(name, "envmaps", "expected a list of {name, file_path} objects")
        resolved = []
        for j, e in enumerate(envmaps):
            if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not isinstance(e.get("file_path"), str):
                raise input_error(name, f"envmaps[{j}]", "expected an object with string fields name and file_path")
            p = Path(e["file_path"])
            resolved.append({**e, "file_path": Path(os.path.normpath(p if p.is_absolute() else base / p))})
        extras["envmaps"] = resolved
    if "objects" in extras and isinstance(extras["objects"], list):  # physinv.synth: ground-truth meshes per instance id
        resolved = []
        for e in extras["objects"]:
            if isinstance(e, dict) and isinstance(e.get("mesh"), str):
                p = Path(e["mesh"])
                e = {**e, "mesh": Path(os.path.normpath(p if p.is_absolute() else base / p))}
            resolved.append(e)
        extras["objects"] = resolved


# ----------------------------------------------------------------------------------------------
# writing


def _relative(path: Path, base: Path) -> str:
    path = Path(path)
    try:
        rel = os.path.relpath(path.resolve() if path.is_absolute() else path, base.resolve())
    except ValueError:  # another drive (Windows)
        return str(path)
    return rel if rel.startswith("..") else "./" + rel if not rel.startswith(".") else rel


def _plain(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return _relative(value, base)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, base) for v in value]
    return value


def _centred_square(frame: Frame) -> bool:
    fx, fy, cx, cy = (float(v) for v in frame.intrinsics)
    return math.isclose(fx, fy, rel_tol=1e-9) and math.isclose(cx, 0.5 * frame.width, abs_tol=1e-9) and math.isclose(cy, 0.5 * frame.height, abs_tol=1e-9)


def write_transforms(path: str | Path, transforms: Transforms, dialect: str = "blender") -> Path:
    """Write ``transforms`` as a json file in ``dialect`` (``blender``, ``ngp`` or ``nerfstudio``).

    Paths are written relative to the json file's folder. Lossless for every dialect: the Blender
    dialect writes ``camera_angle_x`` plus ``w``/``h``, and adds ``fl_x/fl_y/cx/cy`` when the
    intrinsics are not square-pixel and centred (readers prefer them); ngp writes shared
    intrinsics at the top level (per-frame values where frames differ); nerfstudio writes them
    per frame. Top-level and per-frame extras are written back.
    """
    if dialect not in DIALECTS:
        raise PhysinvError(f"write_transforms: unknown dialect '{dialect}' (known: {', '.join(DIALECTS)})")
    path = Path(path)
    base = path.parent
    base.mkdir(parents=True, exist_ok=True)
    frames = transforms.frames
    if not frames:
        raise PhysinvError(f"{path.name}: frames: nothing to write")
    first = frames[0]

    def cam_of(f: Frame) -> dict[str, float | int]:
        fx, fy, cx, cy = (float(v) for v in f.intrinsics)
        cam = {"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": int(f.width), "h": int(f.height)}
        if f.distortion is not None:
            cam.update({k: float(v) for k, v in zip(DISTORTION_KEYS, f.distortion)})
        return cam

    shared = all(cam_of(f) == cam_of(first) for f in frames)
    out: dict[str, Any] = {}
    if dialect == "blender" and shared and first.distortion is None:
        out["camera_angle_x"] = 2.0 * math.atan(0.5 * first.width / float(first.intrinsics[0]))
        out.update({"w": int(first.width), "h": int(first.height)})
        if not _centred_square(first):
            out.update(cam_of(first))
    elif dialect in ("blender", "ngp") and shared:
        out["camera_angle_x"] = 2.0 * math.atan(0.5 * first.width / float(first.intrinsics[0]))
        out["camera_angle_y"] = 2.0 * math.atan(0.5 * first.height / float(first.intrinsics[1]))
        out.update(cam_of(first))
    elif dialect == "nerfstudio":
        out["camera_model"] = transforms.extras.get("camera_model", "OPENCV" if any(f.distortion is not None for f in frames) else "PINHOLE")
    if dialect == "ngp":
        out["aabb_scale"] = transforms.extras.get("aabb_scale", 1)
    for k, v in transforms.extras.items():
        if k not in ("dialect",) and k not in out:
            out[k] = _plain(v, base)

    out_frames = []
    for f in frames:
        rel = _relative(f.image_path, base)
        if dialect == "blender" and rel.lower().endswith(".png"):
            rel = rel[:-4]  # the Blender data stores paths without their extension
        entry: dict[str, Any] = {"file_path": rel}
        if dialect == "nerfstudio" or not shared:
            entry.update(cam_of(f))
        entry["transform_matrix"] = np.asarray(f.c2w, dtype=np.float64).tolist()
        for k, v in f.extras.items():
            entry[k] = _plain(v, base)
        out_frames.append(entry)
    out["frames"] = out_frames
    text = json.dumps(out, indent=2)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path
