"""Triangle meshes through trimesh: OBJ, PLY, GLB/GLTF, STL, OFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from physinv.errors import PhysinvError, input_error

MESH_EXTS = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")


def load_mesh(path: str | Path):
    """Mesh file -> ``trimesh.Trimesh`` (scenes with several geometries are concatenated in world space)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "mesh file not found")
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # noqa: BLE001 - any parser failure is a bad file
        raise input_error(path, None, f"cannot read mesh ({type(err).__name__}: {err})") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise input_error(path, None, "no triangles in this file")
    return loaded


def save_mesh(path: str | Path, vertices, faces) -> Path:
    """Write vertices (V, 3) and integer faces (F, 3) (numpy or torch) to any format trimesh writes."""
    import trimesh

    path = Path(path)
    to_np = lambda a: a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)  # noqa: E731
    v, f = to_np(vertices).astype(np.float64), to_np(faces).astype(np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise PhysinvError(f"{path}: save_mesh needs vertices (V, 3) and faces (F, 3), got {v.shape} and {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise PhysinvError(f"{path}: face indices outside [0, {len(v)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.Trimesh(vertices=v, faces=f, process=False).export(path)
    return path
