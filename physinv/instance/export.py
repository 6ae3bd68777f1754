"""Outputs of an instance run: instance maps of any pose and one mesh per instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from physinv.errors import PhysinvError


def palette(ids: np.ndarray) -> np.ndarray:
    """Label map (H, W) int -> RGB (H, W, 3) float in [0, 1]; 0 is white, k a fixed tab20 colour."""
    import matplotlib

    colours = np.asarray(matplotlib.colormaps["tab20"].colors, np.float32)
    rgb = colours[(ids - 1) % len(colours)]
    return np.where((ids > 0)[..., None], rgb, 1.0).astype(np.float32)


@torch.no_grad()
def instance_meshes(run, resolution: int = 96) -> dict[int, object]:
    """{instance id: trimesh.Trimesh}: marching cubes of the NeRF's density (at physinv.nerf's
    default level) restricted to the lattice points the instance field gives to that instance."""
    import trimesh
    from skimage.measure import marching_cubes

    from physinv.nerf.api import default_level, density_grid

    nerf = run.nerf
    level = default_level(nerf, resolution)
    density = density_grid(nerf, resolution)
    lo, hi = nerf.aabb[0], nerf.aabb[1]
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution, device=nerf.device) for i in range(3)]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    ids = torch.cat([run.query(p, min_density=0.0)[0] for p in pts.split(65536)]).view((resolution,) * 3).cpu().numpy()
    spacing = ((hi - lo) / (resolution - 1)).cpu().numpy()
    meshes = {}
    for k in range(1, run.field.num_labels):
        masked = np.where(ids == k, density, 0.0)
        if not masked.max() > level:
            continue
        verts, faces, _, _ = marching_cubes(masked, level=level, spacing=tuple(spacing.tolist()))
        meshes[k] = trimesh.Trimesh(vertices=verts + lo.cpu().numpy(), faces=faces, process=False)
    return meshes


def render_run(run_dir, out, data=None, split: str = "test", meshes: bool = True, device="cpu") -> dict:
    """Render the instance maps of ``split``'s poses into ``out`` (``ids_###.png`` uint16,
    ``vis_###.png``, ``prob_###.png``) and, with ``meshes``, ``instance_<k>.ply``."""
    from physinv.instance.pipeline import load_instance_run
    from physinv.io.dataset import load_views
    from physinv.io.images import write_image

    run = load_instance_run(run_dir, device)
    data = Path(data) if data is not None else Path(run.meta["data"])
    views = load_views(data, split, device=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(len(views)):
        r = run.render(views.c2w[i], views.intrinsics[i], views.width, views.height)
        ids = r["labels"].cpu().numpy()
        write_image(out / f"ids_{i:03d}.png", ids.astype(np.uint16))
        write_image(out / f"vis_{i:03d}.png", palette(ids))
        write_image(out / f"prob_{i:03d}.png", r["probability"].cpu().numpy())
    n_mesh = 0
    if meshes:
        try:
            for k, mesh in instance_meshes(run).items():
                mesh.export(out / f"instance_{k}.ply")
                n_mesh += 1
        except (ValueError, RuntimeError) as err:  # marching cubes on an empty field
            raise PhysinvError(f"{run_dir}: cannot mesh the instances ({err})") from None
    return {"views": len(views), "meshes": n_mesh, "out": str(out)}
