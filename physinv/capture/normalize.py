"""Scene normalisation: a similarity (uniform scale + translation) that puts the region of
interest of a capture into the unit cube ``[-1, 1]^3`` (or the unit sphere), recorded so that
results (meshes, points) can be mapped back to the capture's own coordinates.

``x_normalized = scale * x_original + translation``; rotations of the cameras are unchanged
(a capture's "up" is whatever COLMAP chose; the methods here need no particular up axis).

The region of interest comes from the sparse points (``roi="points"``: the box between the 2nd and
98th percentiles of each coordinate, which ignores stray points and outliers, grown by
:data:`ROI_MARGIN` on every side because sparse points sit on surfaces and a percentile box cuts
the object's extremities: on the round-trip scene of benchmarks/capture_roundtrip.py the 5–95 %
box without a margin left points up to 1.38 out for an aabb of +-1, and ngp trained on it scored
10 dB below the true poses) or from
the cameras (``roi="cameras"``: centred on the point all optical axes pass closest to, half size
half the median camera distance to it, as :func:`physinv.nerf.train.scene_aabb` assumes for an
object filmed from around). ``roi="auto"`` uses the points when there are at least
:data:`MIN_POINTS`, else the cameras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from physinv.core.camera import look_at_point
from physinv.errors import PhysinvError, input_error
from physinv.io.transforms import Transforms

MIN_POINTS = 20
ROI_PERCENTILES = (2.0, 98.0)
ROI_MARGIN = 1.2  # the point box's half extents are scaled by this
ROI_SOURCES = ("auto", "points", "cameras")
TARGETS = ("cube", "sphere")
UNIT_AABB = [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]


@dataclass(frozen=True)
class Normalization:
    """``x_normalized = scale * x_original + translation`` (scale > 0, translation (3,))."""

    scale: float
    translation: tuple[float, float, float]

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous ``normalized_from_original``."""
        m = np.eye(4) * self.scale
        m[3, 3] = 1.0
        m[:3, 3] = self.translation
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Original points (..., 3) -> normalised points (..., 3)."""
        return self.scale * np.asarray(points, dtype=np.float64) + np.asarray(self.translation)

    def invert(self, points: np.ndarray) -> np.ndarray:
        """Normalised points (..., 3) (e.g. a mesh exported from a run) -> the capture's coordinates."""
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.translation)) / self.scale

    def then(self, other: "Normalization") -> "Normalization":
        """This normalisation followed by ``other``."""
        t = other.scale * np.asarray(self.translation) + np.asarray(other.translation)
        return Normalization(self.scale * other.scale, tuple(float(v) for v in t))

    def to_json(self) -> dict:
        """The ``normalization`` record written at the top level of transforms.json."""
        return {"scale": self.scale, "translation": list(self.translation), "normalized_from_original": self.matrix().tolist()}

    @staticmethod
    def from_json(value, where: str = "normalization") -> "Normalization":
        """Parse a record written by :meth:`to_json`; malformed -> ``PhysinvError`` naming ``where``."""
        try:
            scale = float(value["scale"])
            translation = tuple(float(v) for v in value["translation"])
        except (TypeError, KeyError, ValueError):
            raise input_error(where, None, "expected {scale, translation: [x, y, z]}") from None
        if len(translation) != 3 or not np.isfinite(scale) or scale <= 0 or not np.all(np.isfinite(translation)):
            raise input_error(where, None, "expected a positive scale and a translation of 3 finite numbers")
        return Normalization(scale, translation)  # type: ignore[arg-type]


IDENTITY = Normalization(1.0, (0.0, 0.0, 0.0))


def region_of_interest(c2w: np.ndarray, points: np.ndarray | None = None, roi: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """Centre (3,) and half extents (3,) of what the capture looks at, and the source used.

    c2w: (N, 4, 4) OpenGL camera-to-world; points: (P, 3) sparse points or None (module docstring).
    """
    if roi not in ROI_SOURCES:
        raise PhysinvError(f"--roi: expected one of {', '.join(ROI_SOURCES)}, got '{roi}'")
    have_points = points is not None and len(points) >= MIN_POINTS
    if roi == "points" and not have_points:
        raise PhysinvError(f"--roi points: the scene has {0 if points is None else len(points)} sparse points (need {MIN_POINTS})")
    if roi == "points" or (roi == "auto" and have_points):
        lo, hi = np.percentile(points, ROI_PERCENTILES[0], axis=0), np.percentile(points, ROI_PERCENTILES[1], axis=0)
        half = np.maximum(ROI_MARGIN * 0.5 * (hi - lo), 1e-9)
        return 0.5 * (lo + hi), half, "points"
    c2w_t = torch.as_tensor(np.asarray(c2w), dtype=torch.float64)
    if len(c2w_t) < 2:
        raise PhysinvError("--roi cameras: needs at least two cameras")
    centre = look_at_point(c2w_t).numpy()
    half = 0.5 * np.median(np.linalg.norm(c2w_t[:, :3, 3].numpy() - centre, axis=-1))
    return centre, np.full(3, max(half, 1e-9)), "cameras"


def fit_normalization(centre: np.ndarray, half: np.ndarray, target: str = "cube") -> Normalization:
    """The similarity taking the box ``centre +- half`` into ``[-1, 1]^3`` (``cube``: its longest half
    side becomes 1) or into the unit sphere (``sphere``: its half diagonal becomes 1)."""
    if target not in TARGETS:
        raise PhysinvError(f"--target: expected one of {', '.join(TARGETS)}, got '{target}'")
    size = float(np.max(half)) if target == "cube" else float(np.linalg.norm(half))
    scale = 1.0 / size
    return Normalization(scale, tuple(float(v) for v in -scale * np.asarray(centre, dtype=np.float64)))


def normalize_transforms(transforms: Transforms, norm: Normalization) -> Transforms:
    """Apply ``norm`` to every camera (rotation kept, centre moved and scaled), write ``aabb``
    = the unit cube, and compose the ``normalization`` record with any earlier one."""
    frames = []
    for f in transforms.frames:
        c2w = np.array(f.c2w, dtype=np.float64)
        c2w[:3, 3] = norm.apply(c2w[:3, 3])
        frames.append(type(f)(f.image_path, c2w, f.intrinsics, f.width, f.height, dict(f.extras), f.distortion))
    extras = dict(transforms.extras)
    before = Normalization.from_json(extras["normalization"], f"{transforms.path.name}: normalization") if "normalization" in extras else IDENTITY
    extras["normalization"] = before.then(norm).to_json()
    extras["aabb"] = UNIT_AABB
    return Transforms(transforms.path, frames, extras)


def read_points(path: str | Path) -> np.ndarray:
    """(P, 3) float64 points of a PLY point cloud (``ply_file_path``)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "point cloud not found (ply_file_path)")
    try:
        cloud = trimesh.load(path, process=False)
    except Exception as err:  # noqa: BLE001
        raise input_error(path, None, f"cannot read the point cloud ({type(err).__name__}: {err})") from None
    return np.asarray(cloud.vertices, dtype=np.float64).reshape(-1, 3)


def write_points(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write (P, 3) points (and (P, 3) uint8 colours) as a PLY point cloud, atomically."""
    import os

    import trimesh

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.ply")
    trimesh.PointCloud(np.asarray(points, dtype=np.float64).reshape(-1, 3), colors=colors).export(tmp)
    os.replace(tmp, path)
    return path


def similarity_align(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama 1991, through scikit-image) taking points ``source`` (N, 3)
    onto ``target`` (N, 3): returns the (4, 4) matrix and the aligned source points (N, 3).
    Used to compare reconstructed camera centres with known ones (any scale, rotation, offset)."""
    from skimage.transform import SimilarityTransform

    src, dst = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise PhysinvError(f"similarity_align: needs two (N >= 3, 3) point sets of the same shape, got {src.shape} and {dst.shape}")
    tform = SimilarityTransform.from_estimate(src, dst)
    if not tform:
        raise PhysinvError("similarity_align: the points are degenerate (collinear or coincident)")
    return np.asarray(tform.params), tform(src)
