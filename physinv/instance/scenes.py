"""Procedural training scenes for NeRF-RCNN: radiance + density grids with boxes, classes, 3D masks.

NeRF-RCNN learns from grids sampled from NeRFs (Instance-NeRF §3.2 samples the radiance and the
density on a grid covering the scene, as NeRF-RPN). 3D-FRONT cannot be downloaded here, so the
scenes are generated: 2-6 primitives (sphere, box, cylinder; classes 1..3, 0 = background) of
random size, yaw and colour in the box [-1, 1]^3 (half of them on its floor), not overlapping; their
signed distances give an exact 3D instance grid, and the input grid is what a trained NeRF would
give, with its typical defects:

- density: a soft occupancy ``sigmoid(-sdf / s)`` times a random peak density (log-uniform 4-200
  per scene unit: a briefly trained NeRF's opaque objects can stay at alpha ~0.3 on a 32^3 grid),
  in half of the scenes fading from the surface inwards (a NeRF's density inside an opaque object
  is unconstrained by the images and often low), then blurred (Gaussian, random width), multiplied
  by log-normal noise, with random holes (NeRFs miss thin or dark parts) and floaters (small dense
  blobs in empty space);
- radiance: each object's base colour times a Lambert-like shading term with noise, and random
  dim colours in empty space (a NeRF's colour where nothing is, is arbitrary).

The network input is 4 channels: RGB and alpha = 1 - exp(-sigma * voxel) (NeRF-RPN's density
to alpha conversion, so the input does not depend on the grid resolution).
The files (:func:`write_scenes`): ``scene_00000.npz`` with ``grid`` (4, X, Y, Z) float16,
``labels`` (X, Y, Z) uint8 (0 background, k = object k), ``boxes`` (K, 6) float32 in voxel units,
``classes`` (K,) int64; ``index.json`` lists them with the class names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from physinv.errors import PhysinvError

CLASS_NAMES = ("background", "sphere", "box", "cylinder")


def _sdf(kind: str, p: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Signed distance (...,) of a primitive in its local frame (p (..., 3)); ``half`` = half extents."""
    if kind == "sphere":
        return np.linalg.norm(p, axis=-1) - half[0]
    if kind == "box":
        q = np.abs(p) - half
        return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(-1), 0.0)
    # cylinder along z
    d = np.stack([np.linalg.norm(p[..., :2], axis=-1) - half[0], np.abs(p[..., 2]) - half[2]], -1)
    return np.linalg.norm(np.maximum(d, 0.0), axis=-1) + np.minimum(d.max(-1), 0.0)


def primitive_sdf(kind: str, points: np.ndarray, centre: np.ndarray, yaw: float, half: np.ndarray) -> np.ndarray:
    """Signed distance (...,) at world ``points`` (..., 3) of a primitive (``sphere`` | ``box`` |
    ``cylinder``) centred at ``centre``, turned by ``yaw`` radians about z, with half extents ``half``."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    rot = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return _sdf(kind, (points - centre) @ rot, half)  # world -> local (rot is orthonormal)


def _random_layout(rng: np.random.Generator, max_objects: int = 6) -> list[dict]:
    objects: list[dict] = []
    n = int(rng.integers(2, max_objects + 1))
    for _ in range(60):
        if len(objects) == n:
            break
        cls = int(rng.integers(1, 4))
        kind = CLASS_NAMES[cls]
        if kind == "sphere":
            half = np.full(3, rng.uniform(0.15, 0.35))
        elif kind == "box":
            half = rng.uniform(0.12, 0.4, 3)
        else:
            r = rng.uniform(0.12, 0.3)
            half = np.array([r, r, rng.uniform(0.12, 0.45)])
        yaw = rng.uniform(0, 2 * math.pi) if kind == "box" else 0.0
        reach = float(np.linalg.norm(half[:2])) if kind == "box" else float(half[0])
        # on the floor of the box or at any height (scenes such as physinv's built-in one float)
        z = -1.0 + half[2] + 0.02 if rng.random() < 0.5 else rng.uniform(-0.95 + half[2], 0.95 - half[2])
        centre = np.array([rng.uniform(-0.95 + reach, 0.95 - reach), rng.uniform(-0.95 + reach, 0.95 - reach), z])
        if any(np.linalg.norm(centre[:2] - o["centre"][:2]) < reach + o["reach"] + 0.05 for o in objects):
            continue
        colour = rng.uniform(0.1, 0.95, 3)
        objects.append({"class": cls, "kind": kind, "half": half, "yaw": yaw, "centre": centre, "reach": reach, "colour": colour})
    return objects


def make_scene(rng: np.random.Generator, res: int = 64, artefacts: bool = True) -> dict[str, np.ndarray]:
    """One random scene on a res^3 grid over [-1, 1]^3: grid (4, res, res, res) float32 (RGB, alpha),
    labels (res, res, res) uint8, boxes (K, 6) voxel units, classes (K,)."""
    voxel = 2.0 / res
    c = -1.0 + (np.arange(res) + 0.5) * voxel
    pts = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)
    objects = _random_layout(rng)
    sdf_all = np.full((res, res, res), np.inf)
    labels = np.zeros((res, res, res), np.uint8)
    rgb = rng.uniform(0.0, 0.3, (res, res, res, 3)) if artefacts else np.zeros((res, res, res, 3))
    boxes, classes = [], []
    light = np.array([0.4, -0.3, 0.85])
    for k, o in enumerate(objects, start=1):
        sdf = primitive_sdf(o["kind"], pts, o["centre"], o["yaw"], o["half"])
        inside = sdf <= 0
        if not inside.any():
            continue
        closer = sdf < sdf_all
        labels[inside] = k
        sdf_all = np.minimum(sdf_all, sdf)
        # shading from the SDF gradient (a view-averaged radiance looks like diffuse shading)
        grad = np.stack(np.gradient(sdf, voxel), -1)
        normal = grad / np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), 1e-9)
        shade = 0.35 + 0.65 * np.clip(normal @ light, 0.0, 1.0)
        near = closer & (sdf < 2 * voxel)
        rgb[near] = (o["colour"] * shade[near, None]).clip(0, 1)
        idx = np.argwhere(inside)
        boxes.append(np.concatenate([idx.min(0), idx.max(0) + 1]).astype(np.float32))
        classes.append(o["class"])
    sharp = voxel * (rng.uniform(0.3, 1.0) if artefacts else 0.3)
    occupancy = 1.0 / (1.0 + np.exp(np.clip(sdf_all / sharp, -50, 50)))
    peak = math.exp(rng.uniform(math.log(4.0), math.log(200.0))) if artefacts else 100.0  # density inside, 1/scene unit
    sigma = peak * occupancy
    if artefacts and rng.random() < 0.5:  # hollow: the density falls off below the surface towards a floor
        floor, depth = rng.uniform(0.05, 0.6), voxel * rng.uniform(1.0, 3.0)
        sigma *= floor + (1.0 - floor) * np.exp(np.minimum(sdf_all, 0.0) / depth)
    if artefacts:
        ijk = np.indices((res, res, res)).transpose(1, 2, 3, 0) + 0.5  # voxel centres, voxel units
        sigma = ndimage.gaussian_filter(sigma, rng.uniform(0.0, 1.0))
        sigma *= np.exp(rng.normal(0.0, 0.3, sigma.shape))
        for _ in range(int(rng.integers(0, 4))):  # holes
            centre = rng.uniform(0, res, 3)
            r = rng.uniform(1.0, 0.08 * res)
            sigma[np.linalg.norm(ijk - centre, axis=-1) < r] *= 0.05
        for _ in range(int(rng.integers(0, 8))):  # floaters
            centre = rng.uniform(0, res, 3)
            r = rng.uniform(0.5, 0.05 * res)
            blob = np.linalg.norm(ijk - centre, axis=-1) < r
            sigma[blob] += rng.uniform(5.0, 60.0)
            rgb[blob] = rng.uniform(0, 1, 3)
    alpha = 1.0 - np.exp(-sigma * voxel)
    grid = np.concatenate([rgb.transpose(3, 0, 1, 2), alpha[None]], 0).astype(np.float32)
    return {
        "grid": grid,
        "labels": labels,
        "boxes": np.array(boxes, np.float32).reshape(-1, 6),
        "classes": np.array(classes, np.int64),
    }


def scene_rng(seed: int, i: int) -> np.random.Generator:
    """The random stream of scene ``i``: its own child of ``seed`` (NumPy's ``SeedSequence`` spawn
    key), so a scene does not depend on which process makes it, nor on the scenes before it."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))


def write_scenes(out: str | Path, count: int, res: int = 64, seed: int = 0, artefacts: bool = True) -> dict:
    """Write ``count`` scenes (:func:`make_scene`) and ``index.json`` into ``out``; returns a summary.

    Scenes already there are kept (a killed run resumes); under ``torchrun`` rank r of N makes the
    scenes r, r + N, ... and rank 0 writes ``index.json`` once all exist, so the folder is the same
    whatever N (:mod:`physinv.core.distributed`)."""
    import io

    import torch

    from physinv.core import distributed
    from physinv.core.train import atomic_write_bytes

    if count < 1:
        raise PhysinvError(f"--count: expected an integer >= 1, got {count}")
    if not 8 <= res <= 256:
        raise PhysinvError(f"--res: expected 8..256 voxels, got {res}")
    distributed.setup(torch.device("cpu"))  # scenes are made with NumPy: Gloo is enough
    mine = distributed.rank_items(count, "scenes", "or a larger --count")
    out = Path(out)
    settings = {"count": count, "res": res, "seed": seed, "artefacts": artefacts}
    settings_path = out / "settings.json"
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if not settings_path.is_file():
            atomic_write_bytes(settings_path, (json.dumps(settings) + "\n").encode())
    distributed.barrier()
    old = json.loads(settings_path.read_text())
    if old != settings:
        from physinv.errors import input_error

        diff = sorted(k for k in settings if old.get(k) != settings[k])
        raise input_error(settings_path, ", ".join(diff), "this folder holds scenes made with other settings (use another --out)")
    names = [f"scene_{i:05d}.npz" for i in range(count)]
    made = 0
    for i in mine:
        if (out / names[i]).is_file():
            continue
        s = make_scene(scene_rng(seed, i), res, artefacts)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, grid=s["grid"].astype(np.float16), labels=s["labels"], boxes=s["boxes"], classes=s["classes"])
        atomic_write_bytes(out / names[i], buffer.getvalue())
        made += 1
    made = int(distributed.reduce_sequence_sum([made])[0])
    index = {"scenes": names, "res": res, "classes": list(CLASS_NAMES), "seed": seed, "artefacts": artefacts}
    distributed.merge_index(out / "index.json", lambda: index)
    n_obj = 0
    if distributed.is_main():
        for name in names:
            with np.load(out / name) as z:
                n_obj += len(z["boxes"])
    return {"scenes": count, "made": made, "objects": n_obj, "res": res, "out": str(out), "processes": distributed.world_size()}


def load_scene(path: str | Path) -> dict[str, np.ndarray]:
    """One scene file -> dict of arrays (grid as float32); a bad file is a one-line error."""
    from physinv.errors import input_error

    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "scene file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            scene = {k: z[k] for k in ("grid", "labels", "boxes", "classes")}
    except Exception as err:  # noqa: BLE001
        raise input_error(path, None, f"not a NeRF-RCNN scene file ({type(err).__name__}: {err})") from None
    scene["grid"] = scene["grid"].astype(np.float32)
    return scene


def list_scenes(folder: str | Path) -> list[Path]:
    """The scene files of a folder written by :func:`write_scenes` (from its ``index.json``)."""
    from physinv.errors import input_error

    folder = Path(folder)
    index = folder / "index.json"
    if not index.is_file():
        raise input_error(index, None, "not found (write scenes with `physinv instance make-scenes`)")
    return [folder / n for n in json.loads(index.read_text())["scenes"]]
