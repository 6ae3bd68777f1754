"""COLMAP models (binary or text, read and written with ``pycolmap``) <-> :class:`~physinv.io.transforms.Transforms`.

COLMAP stores, per image, the world-to-camera rigid transform ``cam_from_world = [R | t]`` in
OpenCV camera axes (+x right, +y down, the camera looks along +z); transforms.json stores the
camera-to-world matrix in OpenGL axes (+x right, +y up, looking along -z). The two differ by the
inverse and a flip of the camera's y and z axes::

    c2w_opengl = inverse([R | t]) @ diag(1, -1, -1, 1)

COLMAP's pixel coordinates put the top-left corner of the image at (0, 0) and pixel centres at
half-integers, as physinv does, so ``cx, cy`` carry over unchanged.

Camera models (COLMAP's parameter order -> ``(fx, fy, cx, cy)`` and the distortion
``(k1, k2, k3, k4, p1, p2)`` of :mod:`physinv.core.camera`): SIMPLE_PINHOLE ``f, cx, cy``;
PINHOLE ``fx, fy, cx, cy``; SIMPLE_RADIAL ``f, cx, cy, k``; RADIAL ``f, cx, cy, k1, k2``;
OPENCV ``fx, fy, cx, cy, k1, k2, p1, p2``; FULL_OPENCV ``fx, fy, cx, cy, k1, k2, p1, p2, k3, k4,
k5, k6`` only when its rational terms ``k4..k6`` are zero. Fisheye and other models are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from physinv.errors import PhysinvError, input_error
from physinv.io.transforms import Frame, Transforms

# OpenCV camera axes <-> OpenGL camera axes (flip y and z); its own inverse
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")


def colmap_to_c2w(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """COLMAP ``cam_from_world`` (rotation (3, 3), translation (3,), OpenCV axes) -> c2w (4, 4) OpenGL axes."""
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rotation, translation
    return np.linalg.inv(w2c) @ CV_TO_GL


def c2w_to_colmap(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`colmap_to_c2w`: c2w (4, 4) OpenGL -> COLMAP rotation (3, 3) and translation (3,)."""
    w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64) @ CV_TO_GL)
    return w2c[:3, :3], w2c[:3, 3]


def camera_from_colmap(model: str, params, where: str = "cameras") -> tuple[np.ndarray, np.ndarray | None]:
    """COLMAP model name and parameters -> intrinsics (4,) ``(fx, fy, cx, cy)`` and distortion (6,) or None."""
    p = [float(v) for v in params]
    zero = 0.0
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        return np.array([f, f, cx, cy]), None
    if model == "PINHOLE":
        return np.array(p[:4]), None
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = p
        dist = [k, zero, zero, zero, zero, zero]
        intr = [f, f, cx, cy]
    elif model == "RADIAL":
        f, cx, cy, k1, k2 = p
        dist = [k1, k2, zero, zero, zero, zero]
        intr = [f, f, cx, cy]
    elif model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = p
        dist = [k1, k2, zero, zero, p1, p2]
        intr = [fx, fy, cx, cy]
    elif model == "FULL_OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6 = p
        if any(abs(v) > 0 for v in (k4, k5, k6)):
            raise input_error(where, "FULL_OPENCV", "the rational terms k4..k6 are not supported (re-run COLMAP with --ImageReader.camera_model OPENCV)")
        dist = [k1, k2, k3, zero, p1, p2]
        intr = [fx, fy, cx, cy]
    else:
        raise input_error(where, model, f"camera model not supported (supported: {', '.join(SUPPORTED_MODELS)})")
    dist_arr = np.array(dist, dtype=np.float64)
    return np.array(intr, dtype=np.float64), (dist_arr if np.any(dist_arr != 0) else None)


def find_model_dir(model_dir: str | Path) -> Path:
    """The folder holding ``cameras.bin``/``cameras.txt``: ``model_dir`` itself, else ``0/`` or ``sparse/0/`` below it."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise input_error(model_dir, None, "COLMAP model folder not found")
    for candidate in (model_dir, model_dir / "0", model_dir / "sparse" / "0", model_dir / "sparse"):
        if any((candidate / f"cameras.{ext}").is_file() for ext in ("bin", "txt")):
            return candidate
    raise input_error(model_dir, None, "no COLMAP model here (expected cameras.bin/images.bin/points3D.bin or their .txt forms)")


def read_reconstruction(model_dir: str | Path):
    """``pycolmap.Reconstruction`` of a binary or text model; a malformed model is a ``PhysinvError``."""
    import pycolmap

    path = find_model_dir(model_dir)
    for stem in ("images", "points3D"):
        if not any((path / f"{stem}.{ext}").is_file() for ext in ("bin", "txt")):
            raise input_error(path, None, f"incomplete COLMAP model: no {stem}.bin or {stem}.txt")
    try:
        return pycolmap.Reconstruction(str(path))
    except Exception as err:  # noqa: BLE001 - pycolmap raises plain RuntimeErrors on malformed files
        raise input_error(path, None, f"cannot read the COLMAP model ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def reconstruction_to_transforms(reconstruction, images_dir: str | Path, json_path: str | Path) -> tuple[Transforms, np.ndarray]:
    """Registered images of a ``pycolmap.Reconstruction`` -> (Transforms, sparse points (P, 3)).

    Frames are sorted by image name; each keeps its own camera's intrinsics and distortion.
    An image file missing from ``images_dir`` is a ``PhysinvError`` naming it.
    """
    images_dir = Path(images_dir)
    frames = []
    reg = sorted((im for im in reconstruction.images.values() if im.has_pose), key=lambda im: im.name)
    if not reg:
        raise input_error(json_path, None, "the COLMAP model has no registered image")
    for im in reg:
        cam = reconstruction.cameras[im.camera_id]
        intr, dist = camera_from_colmap(cam.model.name, cam.params, where=f"cameras[{im.camera_id}]")
        path = images_dir / im.name
        if not path.is_file():
            raise input_error(path, None, f"image not found (the COLMAP model names '{im.name}'; pass the photo folder with --images)")
        pose = im.cam_from_world()
        c2w = colmap_to_c2w(np.asarray(pose.rotation.matrix()), np.asarray(pose.translation))
        frames.append(Frame(path.resolve(), c2w, intr, int(cam.width), int(cam.height), {"colmap_image_id": int(im.image_id)}, dist))
    points = np.array([p.xyz for p in reconstruction.points3D.values()], dtype=np.float64).reshape(-1, 3)
    return Transforms(path=Path(json_path), frames=frames, extras={}), points


def transforms_to_reconstruction(transforms: Transforms):
    """Frames -> ``pycolmap.Reconstruction`` (one OPENCV or PINHOLE camera per frame, no points):
    the writer side of :func:`reconstruction_to_transforms`, for tests and for handing poses to COLMAP."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    for i, f in enumerate(transforms.frames, start=1):
        fx, fy, cx, cy = (float(v) for v in f.intrinsics)
        if f.distortion is None:
            cam = pycolmap.Camera(model="PINHOLE", width=f.width, height=f.height, params=[fx, fy, cx, cy], camera_id=i)
        else:
            k1, k2, k3, k4, p1, p2 = (float(v) for v in f.distortion)
            if k4 != 0.0:
                raise PhysinvError(f"frame {i}: COLMAP has no camera model with an r^8 term (k4)")
            params = [fx, fy, cx, cy, k1, k2, p1, p2, k3, 0.0, 0.0, 0.0]
            cam = pycolmap.Camera(model="FULL_OPENCV", width=f.width, height=f.height, params=params, camera_id=i)
        rec.add_camera_with_trivial_rig(cam)
        rot, trans = c2w_to_colmap(f.c2w)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(rot), trans)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=Path(f.image_path).name, camera_id=i, image_id=i), pose)
    return rec
