"""Ground-truth multi-view data rendered by Mitsuba 3 (a renderer physinv does not implement).

:func:`synthesize` writes, under ``out_dir``::

    transforms_train.json, transforms_test.json   Blender dialect (+ w, h) with extras:
        top level: aabb, background, envmaps [{name, file_path, type, params}], envmap_to_world
                   (4x4: the maps' local frame, Mitsuba's equirectangular convention, to world), objects
                   [{id, name, shape, mesh, material}], albedo_encoding, depth_background, variant
        per frame: albedo_path, normal_path, depth_path, instance_path, light
    transforms_relight.json        (with ``test_light``) the test cameras under the second light
    train/r_000.png ...             RGBA, sRGB 8-bit, straight alpha = pixel coverage (``spp`` samples, box filter)
    train/r_000_albedo.png          base colour, sRGB-encoded 8-bit RGB (0 on background)
    train/r_000_normal.npy          float32 (H, W, 3) world-space unit shading normals (0 on background)
    train/r_000_depth.npy           float32 (H, W) distance along the unit pixel-centre ray (0 on background)
    train/r_000_instance.png        uint16 (H, W): 0 background, k = objects[k-1]
    envmaps/<name>.exr              equirectangular (Mitsuba's convention, rotated by envmap_to_world)
    meshes/<object>.ply, meshes/scene.ply   ground-truth geometry in world space
    scene.json                      the resolved scene (objects, materials, lights, cameras)

The geometric maps (albedo, normal, depth, instance) are one sample exactly at each pixel centre
(stratified sampler without jitter, box filter, 1 spp), so they match
``physinv.core.camera.image_rays`` exactly; the RGB images are anti-aliased with ``spp`` samples.
Albedo is the material's base colour whatever the BSDF (diffuse reflectance; the specular tint
of conductors), rendered by swapping every BSDF for a diffuse one of that colour.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from physinv.core.camera import intrinsics_from_fov, look_at
from physinv.errors import PhysinvError
from physinv.io.hdr import read_hdr, write_hdr
from physinv.io.images import linear_to_srgb, write_image
from physinv.io.transforms import Frame, Transforms, write_transforms
from physinv.synth.sky import SkyParams, envmap_to_world, light_variations, sky_map
from physinv.synth.spec import LightSpec, ObjectSpec, SceneSpec, default_scene, default_test_light, load_spec
from physinv.synth.variant import select_variant, use_variant

_INSTANCE_SCALE = 1024.0  # instance k is rendered as a diffuse albedo of k / 1024 (exact in float32)
MAX_OBJECTS = 1023
NEAR_CLIP = 1e-4  # Mitsuba starts camera rays on the near plane; the depth maps add this back


# ----------------------------------------------------------------------------------------------
# geometry (numpy / trimesh; independent of Mitsuba)


def object_transform(obj: ObjectSpec) -> np.ndarray:
    """(4, 4) object-to-world: translate @ Rz @ Ry @ Rx @ scale."""
    rx, ry, rz = (math.radians(a) for a in obj.rotation_deg)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rot_z @ rot_y @ rot_x @ np.diag(obj.scale)
    m[:3, 3] = obj.position
    return m


SMOOTH_SHAPES = ("capsule",)  # meshed shapes rendered with interpolated vertex normals


def object_mesh(obj: ObjectSpec):
    """World-space ground-truth ``trimesh.Trimesh`` of an object (spheres: an icosphere of 2562 vertices)."""
    import trimesh

    from physinv.io.mesh import load_mesh

    if obj.shape == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    elif obj.shape == "cube":
        mesh = trimesh.creation.box(extents=[2.0, 2.0, 2.0])
    elif obj.shape == "cylinder":
        mesh = trimesh.creation.cylinder(radius=1.0, height=2.0, sections=64)
    elif obj.shape == "capsule":
        mesh = trimesh.creation.capsule(height=1.0, radius=0.5, count=[96, 96])
    else:
        mesh = load_mesh(obj.file)
    mesh = mesh.copy()
    mesh.apply_transform(object_transform(obj))
    return mesh


def _box_uv(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unshared vertices (3F, 3), faces (F, 3), and box-projected UVs (3F, 2) in [0, 1] for texturing."""
    tri = vertices[faces]  # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    axis = np.abs(normal).argmax(-1)  # project each face along its dominant axis
    lo, hi = vertices.min(0), vertices.max(0)
    span = np.maximum(hi - lo, 1e-9)
    unit = (tri - lo) / span.max()
    keep = np.array([[1, 2], [0, 2], [0, 1]])[axis]  # (F, 2) the two other axes
    uv = np.take_along_axis(unit, keep[:, None, :].repeat(3, 1), -1)
    return tri.reshape(-1, 3), np.arange(3 * len(faces)).reshape(-1, 3), uv.reshape(-1, 2)


# ----------------------------------------------------------------------------------------------
# cameras


def camera_poses(n: int, spec: SceneSpec, centre: np.ndarray, offset: float, phase: float) -> np.ndarray:
    """(n, 4, 4) float64 camera-to-world on a spherical band above the centre, looking at it.

    Fibonacci-like spiral: equal-area steps in sin(elevation), golden-angle steps in azimuth;
    ``offset`` (radians) rotates the spiral, ``phase`` in [0, 1) shifts the elevation samples, so
    train and test cameras differ.
    """
    cam = spec.camera
    lo, hi = math.sin(math.radians(cam.min_elevation_deg)), math.sin(math.radians(cam.max_elevation_deg))
    golden = math.pi * (3.0 - math.sqrt(5.0))
    poses = []
    for i in range(n):
        s = lo + (hi - lo) * ((i + phase) / max(n, 1))
        el, az = math.asin(min(max(s, -1.0), 1.0)), offset + golden * i
        eye = centre + cam.radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        poses.append(look_at(torch.as_tensor(eye, dtype=torch.float64), torch.as_tensor(centre, dtype=torch.float64)).numpy())
    return np.stack(poses) if poses else np.zeros((0, 4, 4))


# ----------------------------------------------------------------------------------------------
# Mitsuba scene construction


def _texture_dict(mi, material) -> dict:
    tex = material.texture
    if tex is None:
        return {"type": "rgb", "value": list(material.albedo)}
    if tex.type == "image":
        return {"type": "bitmap", "filename": str(tex.file)}
    return {
        "type": "checkerboard",
        "color0": {"type": "rgb", "value": list(tex.colour0)},
        "color1": {"type": "rgb", "value": list(tex.colour1)},
        "to_uv": mi.ScalarTransform4f().scale([tex.tiles, tex.tiles, 1.0]),
    }


def _bsdf_dict(mi, material) -> dict:
    tex = _texture_dict(mi, material)
    if material.type == "diffuse":
        return {"type": "diffuse", "reflectance": tex}
    if material.type == "plastic":
        if material.roughness <= 0:
            return {"type": "plastic", "diffuse_reflectance": tex}
        return {"type": "roughplastic", "distribution": "ggx", "alpha": material.alpha, "diffuse_reflectance": tex}
    if material.roughness <= 0:
        return {"type": "conductor", "material": "none", "specular_reflectance": tex}
    return {"type": "roughconductor", "material": "none", "distribution": "ggx", "alpha": material.alpha, "specular_reflectance": tex}


def _mesh_shape(mi, variant: str, name: str, mesh, smooth: bool = False) -> object:
    """A Mitsuba mesh with box-projected UVs; flat-shaded, or with the mesh's vertex normals (``smooth``)."""
    faces_in = np.asarray(mesh.faces, np.int64)
    vertices, faces, uv = _box_uv(np.asarray(mesh.vertices, np.float64), faces_in)
    shape = mi.Mesh(name, len(vertices), len(faces), has_vertex_normals=smooth, has_vertex_texcoords=True)
    params = mi.traverse(shape)
    arrays = {
        "vertex_positions": vertices.astype(np.float32).ravel(),
        "faces": faces.astype(np.uint32).ravel(),
        "vertex_texcoords": uv.astype(np.float32).ravel(),
    }
    if smooth:  # _box_uv unshares the vertices: each copy takes its original vertex's normal
        arrays["vertex_normals"] = np.asarray(mesh.vertex_normals, np.float32)[faces_in].ravel()
    for key, value in arrays.items():
        if variant.startswith("scalar"):
            params[key] = value
        else:
            params[key] = (mi.UInt32 if key == "faces" else mi.Float)(value)
    params.update()
    return shape


def _build_scene(mi, variant: str, objects, meshes, bsdfs: list[dict], integrator: dict, emitter: dict | None):
    scene: dict = {"type": "scene", "integrator": integrator}
    for k, (obj, mesh, bsdf) in enumerate(zip(objects, meshes, bsdfs)):
        key = f"obj{k + 1:03d}"
        if obj.shape == "sphere":  # analytic: exact depth and normals; to_world also turns its texture
            scene[key] = {"type": "sphere", "to_world": mi.ScalarTransform4f(object_transform(obj).tolist()), "bsdf": bsdf}
        else:
            scene[key] = _mesh_with_bsdf(mi, variant, key, mesh, bsdf, smooth=obj.shape in SMOOTH_SHAPES)
    if emitter is not None:
        scene["light"] = emitter
    return mi.load_dict(scene)


def _mesh_with_bsdf(mi, variant: str, key: str, mesh, bsdf: dict, smooth: bool = False):
    shape = _mesh_shape(mi, variant, key, mesh, smooth)
    shape.set_bsdf(mi.load_dict(bsdf))
    return shape


def mitsuba_sensor(mi, c2w: np.ndarray, intrinsics: np.ndarray, width: int, height: int, spp: int, exact: bool):
    """Mitsuba perspective sensor for an OpenGL c2w and intrinsics (fx, fy, cx, cy), pixel centres at
    +0.5 (Mitsuba's camera looks along +z with +x to the left, so to_world = c2w @ diag(-1, 1, -1, 1)).
    ``exact``: one unjittered sample at each pixel centre (for depth, normal and id maps).

    Mitsuba moves the image the other way from the principal point (an off-centre principal point
    shifted the render away from where the pinhole model puts it, measured by the sft work), so
    the offset it is given is ``(size/2 - c) / size``."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    if not math.isclose(fx, fy, rel_tol=1e-6):
        raise PhysinvError("synth: Mitsuba's perspective sensor needs square pixels (fx == fy)")
    to_world = np.asarray(c2w, np.float64) @ np.diag([-1.0, 1.0, -1.0, 1.0])
    sampler = {"type": "stratified", "sample_count": 1, "jitter": False} if exact else {"type": "independent", "sample_count": spp}
    return mi.load_dict({
        "type": "perspective",
        "fov": math.degrees(2.0 * math.atan(0.5 * width / fx)),
        "fov_axis": "x",
        "principal_point_offset_x": (0.5 * width - cx) / width,
        "principal_point_offset_y": (0.5 * height - cy) / height,
        "near_clip": NEAR_CLIP,
        "far_clip": 1e4,
        "to_world": mi.ScalarTransform4f(to_world.tolist()),
        "film": {"type": "hdrfilm", "width": width, "height": height, "pixel_format": "rgba", "rfilter": {"type": "box"}},
        "sampler": sampler,
    })


def render_film(mi, scene, sensor, seed: int, spp: int) -> np.ndarray:
    """Render and return the film's full bitmap (H, W, C) float32: R, G, B, A, then AOV channels."""
    mi.render(scene, sensor=sensor, seed=seed, spp=spp)
    return np.array(sensor.film().bitmap(), dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# lights


def _light_maps(spec: SceneSpec, lights: int, test_light: bool) -> tuple[list[tuple[str, np.ndarray, dict]], tuple[str, np.ndarray, dict] | None]:
    """[(name, map (H, W, 3), description)] for the training lights, and the test light if asked."""

    def from_spec(light: LightSpec, name: str, sky: SkyParams | None = None):
        if light.type == "file":
            return name, read_hdr(light.file) * np.float32(light.intensity), {"type": "file", "source": str(light.file), "intensity": light.intensity}
        params = sky if sky is not None else light.sky
        return name, sky_map(params), {"type": "sky", "params": params.to_dict()}

    if lights > 1 and spec.light.type == "file":
        raise PhysinvError("--lights: varying illumination needs a procedural sky as the base light, not an HDR file")
    if spec.light.type == "sky":
        train = [from_spec(spec.light, f"sky{i}", p) for i, p in enumerate(light_variations(lights, spec.light.sky))]
    else:
        train = [from_spec(spec.light, Path(spec.light.file).stem)]
    test = None
    if test_light:
        if spec.test_light is not None:
            test = from_spec(spec.test_light, "test_light")
        else:
            base = spec.light.sky if spec.light.type == "sky" else SkyParams()
            test = from_spec(LightSpec("sky", sky=default_test_light(base)), "test_light")
    return train, test


# ----------------------------------------------------------------------------------------------
# the data set


def _scene_aabb(spec: SceneSpec, meshes: list) -> np.ndarray:
    """(2, 3) float64 scene box [lo, hi] in world units: the spec's aabb (checked to hold every
    mesh), else the meshes' bounds padded by 10 % of their largest extent."""
    lo = np.min([m.bounds[0] for m in meshes], 0)
    hi = np.max([m.bounds[1] for m in meshes], 0)
    if spec.aabb is not None:
        aabb = np.asarray(spec.aabb, np.float64)
        if np.any(lo < aabb[0] - 1e-6) or np.any(hi > aabb[1] + 1e-6):
            raise PhysinvError(f"{spec.source}: aabb: the objects reach {lo.round(3).tolist()} .. {hi.round(3).tolist()}, outside the aabb")
        return aabb
    pad = 0.1 * float(np.max(hi - lo))
    return np.stack([lo - pad, hi + pad])


def synthesize(out_dir: str | Path, **options) -> Path:
    """Render a multi-view ground-truth data set into ``out_dir``; returns ``out_dir``.

    Same keyword options as :func:`synthesize_with_info` (which also returns the summary dict).
    """
    return synthesize_with_info(out_dir, **options)[0]


def synthesize_with_info(
    out_dir: str | Path,
    *,
    spec: str | Path | SceneSpec | None = None,
    views: int = 100,
    test_views: int = 10,
    res: int = 64,
    spp: int = 64,
    lights: int = 1,
    test_light: bool = False,
    seed: int = 0,
    variant: str | None = None,
    progress: bool = True,
    prefer_cuda: bool = False,
) -> tuple[Path, dict]:
    """Render a multi-view ground-truth data set into ``out_dir`` (layout in the module docstring).

    spec: a TOML/JSON scene file, a parsed ``SceneSpec``, or None for the built-in scene;
    views / test_views: cameras of the train / test split; res: square image size in pixels;
    spp: samples per pixel of the RGB images; lights: K procedural skies, train view i lit by sky
    i mod K, and so is test view i (novel views under the training lights); test_light: also render the test cameras under a second light
    (``transforms_relight.json``); variant: Mitsuba variant (None: see ``physinv.synth.variant``);
    prefer_cuda: when choosing the variant, try ``cuda_ad_rgb`` first.
    Returns ``(out_dir, info)`` with info a summary dict (views, resolution, seconds, variant, ...).
    """
    t0 = time.perf_counter()
    for name, value, lo in (("--views", views, 1), ("--test-views", test_views, 0), ("--res", res, 4), ("--spp", spp, 1), ("--lights", lights, 1)):
        if int(value) != value or value < lo:
            raise PhysinvError(f"{name}: expected an integer >= {lo}, got {value}")
    scene_spec = default_scene() if spec is None else spec if isinstance(spec, SceneSpec) else load_spec(spec)
    if len(scene_spec.objects) > MAX_OBJECTS:
        raise PhysinvError(f"{scene_spec.source}: objects: at most {MAX_OBJECTS} objects")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    meshes = [object_mesh(o) for o in scene_spec.objects]
    aabb = _scene_aabb(scene_spec, meshes)
    centre = 0.5 * (aabb[0] + aabb[1])
    half_diagonal = 0.5 * float(np.linalg.norm(aabb[1] - aabb[0]))
    if scene_spec.camera.radius <= half_diagonal:
        raise PhysinvError(
            f"{scene_spec.source}: camera.radius: {scene_spec.camera.radius:g} puts the cameras inside the scene box "
            f"(its half-diagonal is {half_diagonal:.3g}); use a larger radius"
        )
    train_lights, relight = _light_maps(scene_spec, lights, test_light)

    variant = variant or select_variant(prefer_cuda=prefer_cuda)
    mi = use_variant(variant)

    # --- ground-truth files that do not depend on the cameras
    (out / "meshes").mkdir(exist_ok=True)
    (out / "envmaps").mkdir(exist_ok=True)
    names = [o.name for o in scene_spec.objects]
    for name, mesh in zip(names, meshes):
        mesh.export(out / "meshes" / f"{name}.ply")
    import trimesh

    trimesh.util.concatenate(meshes).export(out / "meshes" / "scene.ply")
    envmaps = []
    for name, image, desc in train_lights + ([relight] if relight else []):
        write_hdr(out / "envmaps" / f"{name}.exr", image)
        envmaps.append({"name": name, "file_path": out / "envmaps" / f"{name}.exr", **desc})

    # --- Mitsuba scenes: one per light for RGB; two 1-spp AOV scenes for the geometric maps
    emitter_of = {
        e["name"]: {"type": "envmap", "filename": str(e["file_path"]), "to_world": mi.ScalarTransform4f(envmap_to_world().tolist())}
        for e in envmaps
    }
    rgb_bsdfs = [_bsdf_dict(mi, o.material) for o in scene_spec.objects]
    albedo_bsdfs = [{"type": "diffuse", "reflectance": _texture_dict(mi, o.material)} for o in scene_spec.objects]
    id_bsdfs = [{"type": "diffuse", "reflectance": {"type": "rgb", "value": [(k + 1) / _INSTANCE_SCALE] * 3}} for k in range(len(meshes))]
    path_integrator = {"type": "path", "max_depth": 8, "hide_emitters": True}
    scenes = {
        name: _build_scene(mi, variant, scene_spec.objects, meshes, rgb_bsdfs, path_integrator, emitter)
        for name, emitter in emitter_of.items()
    }
    maps_scene = _build_scene(mi, variant, scene_spec.objects, meshes, albedo_bsdfs, {"type": "aov", "aovs": "dd:depth,nn:sh_normal,alb:albedo"}, None)
    ids_scene = _build_scene(mi, variant, scene_spec.objects, meshes, id_bsdfs, {"type": "aov", "aovs": "alb:albedo"}, None)

    # --- cameras
    rng = np.random.default_rng(seed)
    intrinsics = intrinsics_from_fov(math.radians(scene_spec.camera.fov_deg), res, res).numpy()  # (fx, fy, cx, cy) float64
    splits = {
        "train": (camera_poses(views, scene_spec, centre, float(rng.uniform(0, 2 * math.pi)), 0.5),
                  [train_lights[i % len(train_lights)][0] for i in range(views)]),
        "test": (camera_poses(test_views, scene_spec, centre, float(rng.uniform(0, 2 * math.pi)), 0.25),
                 [train_lights[i % len(train_lights)][0] for i in range(test_views)]),
    }
    if relight is not None:
        splits["relight"] = (splits["test"][0], [relight[0]] * test_views)
    else:
        (out / "transforms_relight.json").unlink(missing_ok=True)  # stale from an earlier run
    total = sum(len(p) for p, _ in splits.values())

    from physinv.core.train import progress_bar

    common = {
        "aabb": aabb.tolist(),
        "background": [1.0, 1.0, 1.0],
        "envmaps": envmaps,
        "objects": [
            {"id": k + 1, "name": o.name, "shape": o.shape, "mesh": out / "meshes" / f"{o.name}.ply",
             "material": {**_material_dict(o.material), "mitsuba_alpha": o.material.alpha}}
            for k, o in enumerate(scene_spec.objects)
        ],
        "albedo_encoding": "srgb",
        "depth_background": 0.0,
        "envmap_to_world": envmap_to_world().tolist(),
        "renderer": f"mitsuba {mi.__version__} {variant}",
    }
    seed_base = int(seed) * 1_000_003
    done = 0
    test_maps: list[dict] = []
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("synth", total=total, info=variant)
        for split, (poses, light_names) in splits.items():
            if len(poses) == 0:  # --test-views 0
                (out / f"transforms_{split}.json").unlink(missing_ok=True)
                continue
            folder = out / ("test" if split == "relight" else split)
            folder.mkdir(exist_ok=True)
            prefix = "l" if split == "relight" else "r"
            frames = []
            for i, (c2w, light) in enumerate(zip(poses, light_names)):
                stem = folder / f"{prefix}_{i:03d}"
                rgb_sensor = mitsuba_sensor(mi, c2w, intrinsics, res, res, spp, exact=False)
                rgba = render_film(mi, scenes[light], rgb_sensor, seed_base + done, spp)
                _write_rgba(stem.with_suffix(".png"), rgba)
                extras: dict = {"light": light}
                if split == "relight":  # same cameras as the test split: same geometric maps
                    extras.update({k: v for k, v in test_maps[i].items() if k != "light"})
                else:
                    exact = mitsuba_sensor(mi, c2w, intrinsics, res, res, 1, exact=True)
                    extras.update(_write_maps(mi, stem, maps_scene, ids_scene, exact, intrinsics))
                frames.append(Frame(stem.with_suffix(".png"), c2w, intrinsics.copy(), res, res, extras))
                done += 1
                bar.update(task, advance=1)
            if split == "test":
                test_maps = [f.extras for f in frames]
            write_transforms(out / f"transforms_{split}.json", Transforms(out / f"transforms_{split}.json", frames, dict(common)), dialect="blender")

    seconds = time.perf_counter() - t0
    info = {
        "views": views, "test_views": test_views, "resolution": [res, res], "spp": spp, "lights": len(train_lights),
        "test_light": relight is not None, "objects": len(meshes), "seconds": round(seconds, 2), "variant": variant,
    }
    scene_json = {
        "source": scene_spec.source, "aabb": aabb.tolist(), "camera": asdict(scene_spec.camera),
        "objects": [{**{k: v for k, v in common["objects"][k].items() if k != "mesh"}, "mesh": f"meshes/{o.name}.ply",
                     "position": o.position, "rotation_deg": o.rotation_deg, "scale": o.scale, "to_world": object_transform(o).tolist()}
                    for k, o in enumerate(scene_spec.objects)],
        "lights": [{**e, "file_path": f"envmaps/{e['name']}.exr"} for e in envmaps],
        "summary": info,
    }
    (out / "scene.json").write_text(json.dumps(scene_json, indent=2, default=str) + "\n")
    return out, info


def _material_dict(material) -> dict:
    d = {"type": material.type, "albedo": material.albedo, "roughness": material.roughness}
    if material.texture is not None:  # the texture replaces the constant albedo
        del d["albedo"]
        t = material.texture
        d["texture"] = {"type": t.type, "file": str(t.file)} if t.type == "image" else {"type": t.type, "colour0": t.colour0, "colour1": t.colour1, "tiles": t.tiles}
    return d


def _write_rgba(path: Path, rgba: np.ndarray) -> None:
    """Premultiplied linear RGBA from Mitsuba -> straight-alpha sRGB 8-bit PNG."""
    alpha = np.clip(rgba[..., 3:4], 0.0, 1.0)
    rgb = np.where(alpha > 1e-6, rgba[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    write_image(path, np.concatenate([linear_to_srgb(np.clip(rgb, 0.0, None)), alpha], -1))


def near_plane_offset(intrinsics: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W) distance from the camera centre to the near plane along each pixel-centre ray."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    u = (np.arange(width) + 0.5 - cx) / fx
    v = (np.arange(height) + 0.5 - cy) / fy
    return NEAR_CLIP * np.sqrt(1.0 + u[None, :] ** 2 + v[:, None] ** 2)


def _write_maps(mi, stem: Path, maps_scene, ids_scene, sensor, intrinsics: np.ndarray) -> dict:
    bitmap = render_film(mi, maps_scene, sensor, 0, 1)  # R G B A dd nn.xyz alb.rgb
    hit = bitmap[..., 4] > 0  # the aov integrator leaves alpha at 0: a hit is a positive distance
    h, w = hit.shape
    depth = np.where(hit, bitmap[..., 4].astype(np.float64) + near_plane_offset(intrinsics, w, h), 0.0).astype(np.float32)
    normal = bitmap[..., 5:8]
    normal = normal / np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    normal = np.where(hit[..., None], normal, 0.0).astype(np.float32)
    albedo = np.where(hit[..., None], bitmap[..., 8:11], 0.0)
    ids_bitmap = render_film(mi, ids_scene, sensor, 0, 1)  # R G B A alb.rgb
    instance = np.where(hit, np.rint(ids_bitmap[..., 4] * _INSTANCE_SCALE), 0).astype(np.uint16)
    paths = {
        "albedo_path": stem.with_name(stem.name + "_albedo.png"),
        "normal_path": stem.with_name(stem.name + "_normal.npy"),
        "depth_path": stem.with_name(stem.name + "_depth.npy"),
        "instance_path": stem.with_name(stem.name + "_instance.png"),
    }
    write_image(paths["albedo_path"], linear_to_srgb(np.clip(albedo, 0.0, 1.0)))
    np.save(paths["normal_path"], normal)
    np.save(paths["depth_path"], depth)
    write_image(paths["instance_path"], instance)
    return paths
