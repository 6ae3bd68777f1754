"""Mitsuba 3 renders of a textured triangle mesh through an OpenCV pinhole camera (ground truth for
``sft synth`` and the rasterizer tests; physinv's own rasterizer never renders the ground truth).

The cloth is a two-sided diffuse surface textured by ``texture`` (sRGB file, linearised by
Mitsuba) under a constant white environment, so an unoccluded pixel shows the texture colour and
folds darken by ambient occlusion. Masks and depth are one sample exactly at each pixel centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from physinv.synth.scene import mitsuba_sensor, near_plane_offset, render_film
from physinv.synth.variant import select_variant, use_variant


def opencv_to_mitsuba_camera(world_to_camera: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV (w2c, (fx, fy, cx, cy) with centres at integers) -> OpenGL c2w and intrinsics with
    centres at +0.5, as ``physinv.core.camera`` and ``physinv.synth.scene.mitsuba_sensor`` take them."""
    c2w = np.linalg.inv(np.asarray(world_to_camera, np.float64)) @ np.diag([1.0, -1.0, -1.0, 1.0])
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return c2w, np.array([fx, fy, cx + 0.5, cy + 0.5])


def _mesh(mi, variant: str, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None):
    shape = mi.Mesh("cloth", len(vertices), len(faces), has_vertex_normals=False, has_vertex_texcoords=uvs is not None)
    params = mi.traverse(shape)
    arrays = {"vertex_positions": np.asarray(vertices, np.float32).ravel(), "faces": np.asarray(faces, np.uint32).ravel()}
    if uvs is not None:  # Mitsuba's bitmap has v pointing down; OBJ's v points up
        arrays["vertex_texcoords"] = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], -1).astype(np.float32).ravel()
    for key, value in arrays.items():
        params[key] = value if variant.startswith("scalar") else (mi.UInt32 if key == "faces" else mi.Float)(value)
    params.update()
    return shape


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    world_to_camera: np.ndarray,
    intrinsics: np.ndarray,
    width: int,
    height: int,
    *,
    uvs: np.ndarray | None = None,
    texture: str | Path | None = None,
    spp: int = 32,
    seed: int = 0,
    variant: str | None = None,
) -> dict[str, np.ndarray]:
    """Render ``{"rgb": (H, W, 3) linear, premultiplied by coverage, "alpha": (H, W) coverage,
    "mask": (H, W) bool hit at the pixel centre, "depth": (H, W) camera z [m], 0 = background}``."""
    variant = variant or select_variant()
    mi = use_variant(variant)
    c2w, intr = opencv_to_mitsuba_camera(world_to_camera, intrinsics)
    reflectance = {"type": "bitmap", "filename": str(texture)} if texture is not None else {"type": "rgb", "value": [0.7, 0.7, 0.7]}
    bsdf = mi.load_dict({"type": "twosided", "bsdf": {"type": "diffuse", "reflectance": reflectance}})
    shape = _mesh(mi, variant, np.asarray(vertices, np.float64), np.asarray(faces, np.int64), None if uvs is None else np.asarray(uvs, np.float64))
    shape.set_bsdf(bsdf)
    rgb_scene = mi.load_dict({"type": "scene", "integrator": {"type": "path", "max_depth": 4, "hide_emitters": True},
                              "cloth": shape, "light": {"type": "constant", "radiance": {"type": "rgb", "value": 1.0}}})
    rgba = render_film(mi, rgb_scene, mitsuba_sensor(mi, c2w, intr, width, height, spp, exact=False), seed, spp)
    shape2 = _mesh(mi, variant, np.asarray(vertices, np.float64), np.asarray(faces, np.int64), None)
    shape2.set_bsdf(mi.load_dict({"type": "diffuse"}))
    aov_scene = mi.load_dict({"type": "scene", "integrator": {"type": "aov", "aovs": "dd:depth"}, "cloth": shape2})
    bitmap = render_film(mi, aov_scene, mitsuba_sensor(mi, c2w, intr, width, height, 1, exact=True), 0, 1)
    hit = bitmap[..., 4] > 0
    distance = bitmap[..., 4].astype(np.float64) + near_plane_offset(intr, width, height)
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    u = (np.arange(width) - cx) / fx
    v = (np.arange(height) - cy) / fy
    ray_len = np.sqrt(1.0 + u[None, :] ** 2 + v[:, None] ** 2)
    depth = np.where(hit, distance / ray_len, 0.0)
    return {"rgb": rgba[..., :3], "alpha": np.clip(rgba[..., 3], 0.0, 1.0), "mask": hit, "depth": depth}
