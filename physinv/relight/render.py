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


def light_for(run: RelightRun, envmap: Path | None, data: Path | None = None) -> tuple[sg.SGLight, dict]:
    """The run's learnt light, or an SG fit of ``envmap`` rotated by the data's (else the run's
    data's) ``envmap_to_world`` (identity when neither has one)."""
    if envmap is None:
        return run.model.light(), {"light": "learnt"}
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


def export_mesh(run: RelightRun, out: Path, resolution: int = 128) -> dict:
    """Marching cubes of the SDF's zero level in the unit sphere -> world-space mesh with the albedo
    as sRGB vertex colours (``.glb``/``.ply``/``.obj``), plus ``<stem>_light.json``/``.exr`` (the learnt SG light)."""
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
        values = torch.cat([run.model.sdf(p) for p in grid.split(65536)]).reshape(resolution, resolution, resolution).cpu().numpy()
    if values.min() >= 0 or values.max() <= 0:
        raise PhysinvError(f"{run.run_dir}: the SDF has no zero level inside the unit sphere (an empty or unfitted run)")
    verts, faces, _, _ = marching_cubes(values, level=0.0, spacing=(2.0 / (resolution - 1),) * 3)
    verts = verts - 1.0
    with torch.no_grad():
        v = torch.as_tensor(verts, dtype=torch.float32, device=dev)
        albedo = torch.cat([run.model.albedo(p) for p in v.split(65536)])
    colours = to_uint8_image(to_display(albedo, False).clamp(0, 1)[None])[0]
    world = verts * run.scale + run.centre.cpu().numpy()
    # marching cubes orders triangles for an SDF increasing inwards; ours increases outwards
    mesh = trimesh.Trimesh(vertices=world, faces=faces[:, ::-1], vertex_colors=np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], -1), process=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(out)
    rot = data_envmap_to_world(run.data)
    json_path, exr_path = write_light(run.model.light(), out.with_name(out.stem + "_light"), to_world=rot)
    return {"mesh": str(out), "vertices": int(len(world)), "faces": int(len(faces)), "light_json": str(json_path), "light_exr": str(exr_path)}
