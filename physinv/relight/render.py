"""Render a fitted relighting run under any light and pose, edit its material, export mesh and light."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from physinv.core import sg
from physinv.core.camera import intrinsics_from_fov, orbit_poses
from physinv.errors import PhysinvError, input_error
from physinv.io.dataset import load_views
from physinv.io.report import to_uint8_image
from physinv.io.transforms import read_transforms, split_path
from physinv.relight.api import RelightRun, write_light
from physinv.relight.data import read_envmap
from physinv.relight.train import to_display


def data_envmap_to_world(data_dir: Path | None) -> torch.Tensor | None:
    """The ``envmap_to_world`` (3, 3) of a data set's train (else test) split, or None."""
    if data_dir is None:
        return None
    for split in ("train", "test"):
        try:
            extras = read_transforms(split_path(data_dir, split)).extras
        except PhysinvError:
            continue
        if "envmap_to_world" in extras:
            return torch.as_tensor(extras["envmap_to_world"], dtype=torch.float32)
    return None


def light_for(run: RelightRun, envmap: Path | None, data: Path | None = None, learnt: str | None = None) -> tuple[sg.SGLight, dict]:
    """The run's learnt light (NeRD: the one named ``learnt``, else the first), or an SG fit of
    ``envmap`` rotated by the data's (else the run's data's) ``envmap_to_world`` (identity when neither has one)."""
    if learnt is not None:
        if envmap is not None:
            raise PhysinvError("--light and --envmap: give one of them")
        light = run.learnt_light(learnt)
        if light is None:
            known = ", ".join(str(n) for n in run.light_sets if n is not None) or "none"
            raise PhysinvError(f"--light: '{learnt}' is not a learnt illumination of this run (named: {known})")
        return light, {"light": f"learnt ({learnt})"}
    if envmap is None:
        return run.model.light(), {"light": "learnt" if not run.light_sets else f"learnt ({run.light_sets[0]})"}
    image = read_envmap(envmap, None)
    rot = data_envmap_to_world(data) if data is not None else None
    rot = rot if rot is not None else data_envmap_to_world(run.data)
    light, rel = run.light_from_map(image, None if rot is None else rot.to(run.device))
    return light, {"light": str(envmap), "light_fit_rel_l2": rel}


def cameras(run: RelightRun, data: Path | None, split: str, orbit: int, elevation_deg: float) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """World cameras (N, 4, 4), intrinsics (N, 4), width, height: the split's views, else an orbit
    around the run's object at the training cameras' mean distance and field of view."""
    if data is not None:
        views = load_views(data, split, device="cpu")
        return views.c2w, views.intrinsics, views.width, views.height
    if orbit < 1:
        raise PhysinvError(f"--orbit: must be >= 1, got {orbit}")
    centre = run.centre.cpu().double()
    radius, width, height, intr = 3.0 * run.scale, 64, 64, None
    if run.data is not None and split_path(run.data, "train").is_file():
        train = load_views(run.data, "train", device="cpu")
        radius = float((train.c2w[:, :3, 3].double() - centre).norm(dim=-1).mean())
        width, height, intr = train.width, train.height, train.intrinsics[0]
    poses = orbit_poses(orbit, radius, elevation_deg, target=centre).float()
    if intr is None:
        intr = intrinsics_from_fov(np.radians(40.0), width, height).float()
    return poses, intr.expand(orbit, 4), width, height


def render_set(run: RelightRun, out: Path, poses, intrinsics, width: int, height: int, light: sg.SGLight, exposure: float = 1.0, prefix: str = "rgb", **overrides) -> dict:
    """Render every pose: ``<prefix>_###.png`` (display-encoded, composited on the run's background),
    ``albedo_###.png``, ``normal_###.png`` and an animated ``<prefix>.gif``."""
    import imageio.v3 as iio

    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (c2w, k) in enumerate(zip(poses, intrinsics)):
        img = run.render_image(c2w, k, width, height, light=light, **overrides)
        hit = img["hit"][..., None].float()
        rgb = to_display(img["rgb"] * exposure, run.linear).clamp(0, 1) * hit + run.background * (1 - hit)
        frame = to_uint8_image(rgb)
        iio.imwrite(out / f"{prefix}_{i:03d}.png", frame)
        iio.imwrite(out / f"albedo_{i:03d}.png", to_uint8_image(to_display(img["albedo"], False).clamp(0, 1)))
        iio.imwrite(out / f"normal_{i:03d}.png", to_uint8_image((img["normal"] * 0.5 + 0.5) * hit))
        frames.append(frame)
    gif = out / f"{prefix}.gif"
    iio.imwrite(gif, np.stack(frames), duration=100, loop=0)
    return {"frames": len(frames), "out": str(out), "animation": str(gif)}


def export_mesh(run: RelightRun, out: Path, resolution: int = 128, level: float | None = None) -> dict:
    """Marching cubes of the surface in the unit sphere's cube -> world-space mesh with sRGB vertex
    colours (``.glb``/``.ply``/``.obj``), plus the learnt SG light(s) as ``<stem>_light.json``/``.exr``.

    PhySG: the SDF's zero level, coloured by the diffuse albedo. NeRD: the density's ``level``
    (default 10 per normalised unit) set, coloured by the base colour; one light file per learnt
    illumination (``<stem>_light.json`` for the first, ``<stem>_light_<k>.json`` for the others)."""
    import trimesh
    from skimage.measure import marching_cubes

    if out.suffix.lower() not in (".glb", ".ply", ".obj"):
        raise input_error(out, None, "expected a .glb, .ply or .obj file name")
    if resolution < 16:
        raise PhysinvError(f"--res: must be >= 16, got {resolution}")
    dev = run.device
    axis = torch.linspace(-1.0, 1.0, resolution, device=dev)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        values = torch.cat([surface_values(run, p, level) for p in grid.split(65536)]).reshape(resolution, resolution, resolution).cpu().numpy()
    if values.min() >= 0 or values.max() <= 0:
        what = "the SDF has no zero level" if run.method != "nerd" else f"the density never crosses {level if level is not None else 10.0:g}"
        raise PhysinvError(f"{run.run_dir}: {what} inside the unit sphere (an empty or unfitted run)")
    verts, faces, _, _ = marching_cubes(values, level=0.0, spacing=(2.0 / (resolution - 1),) * 3)
    verts = verts - 1.0
    with torch.no_grad():
        v = torch.as_tensor(verts, dtype=torch.float32, device=dev)
        colour_fn = run.model.base_colour if run.method == "nerd" else run.model.albedo
        albedo = torch.cat([colour_fn(p) for p in v.split(65536)])
    colours = to_uint8_image(to_display(albedo, False).clamp(0, 1)[None])[0]
    world = verts * run.scale + run.centre.cpu().numpy()
    # marching cubes orders triangles for an SDF increasing inwards; ours increases outwards
    mesh = trimesh.Trimesh(vertices=world, faces=faces[:, ::-1], vertex_colors=np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], -1), process=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(out)
    rot = data_envmap_to_world(run.data)
    json_path, exr_path = write_light(run.model.light(), out.with_name(out.stem + "_light"), to_world=rot)
    result = {"mesh": str(out), "vertices": int(len(world)), "faces": int(len(faces)), "light_json": str(json_path), "light_exr": str(exr_path)}
    for k in range(1, len(run.light_sets)):
        write_light(run.model.light(k), out.with_name(f"{out.stem}_light_{k}"), to_world=rot)
    if run.light_sets:
        result["lights"] = [str(name) for name in run.light_sets]
    return result


def surface_values(run: RelightRun, points: torch.Tensor, level: float | None = None) -> torch.Tensor:
    """(N,) values negative inside the surface at normalised points (N, 3): the SDF (PhySG), or
    level - sigma (NeRD; level 10 by default)."""
    if run.method == "nerd":
        return run.model.surface_field(points, 10.0 if level is None else level)
    return run.model.sdf(points)
