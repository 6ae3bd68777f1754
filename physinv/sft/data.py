"""φ-SfT sequences on disk: the loader (with one-line errors) and the synthetic generator.

Layout of a sequence folder (DESIGN.md, "Monocular video + template")::

    frames/0000.png ...      RGB (sRGB 8-bit), numbered from 0000 without gaps
    masks/0000.png ...       foreground where > 0, same size as the frames
    camera.json              width, height, fx, fy, cx, cy (OpenCV: pixel centres at integers),
                             world_to_camera (4x4, OpenCV axes x right, y down, z forward)
    template.obj             the surface in frame 0 (world coordinates, metres) with UVs (vt)
    texture.png              the template's texture (v = 0 is the bottom row, OBJ convention)
    meta.json                optional: fps (default 30), gravity (default [0, 0, -9.8]: world z is up),
                             handles (template vertex ids held by a hand or clamp; their motion is
                             unknown); sft synth adds the ground-truth physics
    depth/0000.npy           optional: z-depth [m], 0 = background
    gt_points/0000.npy       optional: (N, 3) world points per frame (sft synth: 10 000 samples on the surface)
    gt_meshes/0000.obj       optional: ground-truth surface per frame

``physinv sft synth`` writes all of it: a textured square cloth (a scikit-image photo) held by two
corners, one of which moves (the handle), falling under gravity in a wind, simulated on a grid
finer than the template (``sim_n`` vs ``template_n`` vertices per side) with a material drawn
around the default, and rendered by Mitsuba 3 (:mod:`physinv.sft.mitsuba`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from physinv.errors import PhysinvError, input_error
from physinv.io.images import load_npy, read_image, write_image

CAMERA_FIELDS = ("width", "height", "fx", "fy", "cx", "cy", "world_to_camera")
TEXTURES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


@dataclass
class Sequence:
    """A loaded sequence. frames (T, H, W, 3) float32 in [0, 1]; masks (T, H, W) float32 in {0, 1};
    intrinsics (4,) float64 (fx, fy, cx, cy) OpenCV; world_to_camera (4, 4) float64; template
    vertices (V, 3) float64 [m], faces (F, 3) long, uvs (V, 2) float64; texture (Ht, Wt, 3) float32."""

    root: Path
    frames: torch.Tensor
    masks: torch.Tensor
    intrinsics: torch.Tensor
    world_to_camera: torch.Tensor
    vertices: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor
    texture: torch.Tensor
    fps: float = 30.0
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[2]), int(self.frames.shape[1])  # (width, height)


def _numbered(folder: Path, ext: str) -> list[Path]:
    """Files ``0000.ext, 0001.ext ...`` in ``folder``; a gap is a missing file (named in the error)."""
    if not folder.is_dir():
        raise input_error(folder, None, "folder not found")
    found = {}
    for p in folder.glob(f"*{ext}"):
        if p.stem.isdigit():
            found[int(p.stem)] = p
    if not found:
        raise input_error(folder, None, f"no numbered {ext} files (expected 0000{ext}, 0001{ext}, ...)")
    last = max(found)
    for i in range(last + 1):
        if i not in found:
            raise input_error(folder / f"{i:04d}{ext}", None, f"missing (frames are numbered 0000..{last:04d} without gaps)")
    return [found[i] for i in range(last + 1)]


def load_camera(path: Path) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """camera.json -> (width, height, intrinsics (4,), world_to_camera (4, 4))."""
    if not path.is_file():
        raise input_error(path, None, "camera file not found")
    try:
        cam = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise input_error(path, None, f"not valid JSON ({err.msg} at line {err.lineno})") from None
    for key in CAMERA_FIELDS:
        if key not in cam:
            raise input_error(path, key, "missing")
    try:
        width, height = int(cam["width"]), int(cam["height"])
        intr = torch.tensor([float(cam[k]) for k in ("fx", "fy", "cx", "cy")], dtype=torch.float64)
        w2c = torch.tensor(cam["world_to_camera"], dtype=torch.float64)
    except (TypeError, ValueError):
        raise input_error(path, None, "width/height must be integers, fx/fy/cx/cy numbers, world_to_camera a 4x4 list") from None
    if w2c.shape != (4, 4) or not torch.isfinite(w2c).all():
        raise input_error(path, "world_to_camera", f"expected a finite 4x4 matrix, got shape {tuple(w2c.shape)}")
    if not torch.isfinite(intr).all() or intr[0] <= 0 or intr[1] <= 0:
        raise input_error(path, "fx", "fx and fy must be positive and finite")
    return width, height, intr, w2c


def check_template(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Non-manifold edges, inconsistently oriented (flipped) faces and degenerate faces -> one-line error."""
    tri = vertices[faces]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    bad = np.nonzero(area2 <= 1e-14 * max(1.0, float(np.abs(vertices).max()) ** 2))[0]
    if len(bad):
        raise input_error(path, None, f"face {int(bad[0])} is degenerate (zero area)")
    directed: dict[tuple[int, int], int] = {}
    undirected: dict[tuple[int, int], int] = {}
    for fi, (a, b, c) in enumerate(faces.tolist()):
        for u, v in ((a, b), (b, c), (c, a)):
            key = (min(u, v), max(u, v))
            undirected[key] = undirected.get(key, 0) + 1
            if undirected[key] > 2:
                raise input_error(path, None, f"non-manifold: edge ({key[0]}, {key[1]}) is shared by more than two faces")
            if (u, v) in directed:
                raise input_error(path, None, f"flipped face: faces {directed[(u, v)]} and {fi} run edge ({u}, {v}) the same way (inconsistent orientation)")
            directed[(u, v)] = fi


def load_template(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """template.obj -> vertices (V, 3) float64, faces (F, 3) long, uvs (V, 2) float64 (checked)."""
    from physinv.io.mesh import load_mesh

    mesh = load_mesh(path)
    uv = getattr(mesh.visual, "uv", None)
    if uv is None or len(uv) != len(mesh.vertices):
        raise input_error(path, "vt", "the template has no texture coordinates (UVs); φ-SfT needs them to texture the mesh")
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    check_template(path, v, f)
    return torch.from_numpy(v), torch.from_numpy(f), torch.from_numpy(np.asarray(uv, np.float64))


def load_sequence(root: str | Path, max_frames: int | None = None) -> Sequence:
    """Read and check a sequence folder (see the module docstring); errors name the file and field."""
    root = Path(root)
    if not root.is_dir():
        raise input_error(root, None, "sequence folder not found")
    width, height, intr, w2c = load_camera(root / "camera.json")
    frame_files = _numbered(root / "frames", ".png")
    mask_files = _numbered(root / "masks", ".png")
    if len(mask_files) < len(frame_files):
        raise input_error(root / "masks" / f"{len(mask_files):04d}.png", None, f"missing (there are {len(frame_files)} frames)")
    if len(frame_files) < 2:
        raise input_error(root / "frames", None, "need at least 2 frames")
    n = len(frame_files) if max_frames is None else min(len(frame_files), max_frames)
    frames, masks = [], []
    for fp, mp in zip(frame_files[:n], mask_files[:n]):
        img = read_image(fp)
        if img.shape[:2] != (height, width):
            raise input_error(fp, None, f"size {img.shape[1]}x{img.shape[0]} differs from camera.json's {width}x{height}")
        m = read_image(mp)
        if m.shape[:2] != (height, width):
            raise input_error(mp, None, f"size {m.shape[1]}x{m.shape[0]} differs from the frames' {width}x{height}")
        frames.append(img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, -1))
        masks.append((m[..., 0] > 0).astype(np.float32))
    verts, faces, uvs = load_template(root / "template.obj")
    tex = read_image(root / "texture.png")
    tex = tex[..., :3] if tex.shape[-1] >= 3 else np.repeat(tex[..., :1], 3, -1)
    meta: dict = {}
    if (root / "meta.json").is_file():
        try:
            meta = json.loads((root / "meta.json").read_text())
        except json.JSONDecodeError as err:
            raise input_error(root / "meta.json", None, f"not valid JSON ({err.msg})") from None
    fps = float(meta.get("fps", 30.0))
    if not (fps > 0 and math.isfinite(fps)):
        raise input_error(root / "meta.json", "fps", f"must be a positive number, got {meta.get('fps')!r}")
    return Sequence(root, torch.from_numpy(np.stack(frames)), torch.from_numpy(np.stack(masks)), intr, w2c,
                    verts, faces, uvs, torch.from_numpy(np.ascontiguousarray(tex)), fps, meta)


GT_POINTS = 10000  # points sampled on each ground-truth surface


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n, 3) points uniformly distributed over the area of a triangle mesh (seeded)."""
    import trimesh

    pts, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices=vertices, faces=faces, process=False), n, seed=seed)
    return np.asarray(pts, np.float64)


def load_ground_truth(root: str | Path, frame: int) -> np.ndarray | None:
    """(N, 3) ground-truth world points of a frame: gt_points, else GT_POINTS samples on the
    gt_meshes surface, else None."""
    root = Path(root)
    pts = root / "gt_points" / f"{frame:04d}.npy"
    if pts.is_file():
        arr = load_npy(pts)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise input_error(pts, None, f"expected (N, 3) points, got shape {arr.shape}")
        return arr.astype(np.float64)
    mesh = root / "gt_meshes" / f"{frame:04d}.obj"
    if mesh.is_file():
        from physinv.io.mesh import load_mesh

        m = load_mesh(mesh)
        return sample_surface(np.asarray(m.vertices, np.float64), np.asarray(m.faces), GT_POINTS, seed=frame)
    return None


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None = None) -> Path:
    """Write a triangle mesh as OBJ with one ``vt`` per vertex (so UVs survive a round trip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in np.asarray(vertices, np.float64)]
    if uvs is not None:
        lines += [f"vt {u:.9g} {v:.9g}" for u, v in np.asarray(uvs, np.float64)]
        lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in np.asarray(faces)]
    else:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces)]
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# synthetic sequences


def _texture_image(seed: int, size: int = 256) -> np.ndarray:
    """A scikit-image bundled photo (chosen by seed), centre-cropped square, resized, float RGB."""
    import skimage.data
    from skimage.transform import resize

    name = TEXTURES[seed % len(TEXTURES)]
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    img = img[..., :3].astype(np.float64) / 255.0
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return resize(img, (size, size), anti_aliasing=True).astype(np.float32)


def look_at_opencv(eye, target) -> np.ndarray:
    """OpenCV world_to_camera (4, 4) of a camera at ``eye`` looking at ``target`` (world z up)."""
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ eye
    return w2c


def default_camera(res: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV world_to_camera (4, 4) and intrinsics (fx, fy, cx, cy) viewing the cloth from the
    front, above and to the side (z up in the world)."""
    w2c = look_at_opencv([0.3, -0.85, 0.25], [0.0, 0.1, -0.18])
    f = 0.5 * res / math.tan(math.radians(40.0) / 2)
    return w2c, np.array([f, f, (res - 1) / 2, (res - 1) / 2])


@dataclass
class SynthConfig:
    frames: int = 40
    res: int = 256
    template_n: int = 17  # 289 template vertices (φ-SfT's templates: ~300)
    sim_n: int = 33  # ground-truth simulation grid (finer than the template)
    size: float = 0.5  # cloth side [m]
    fps: float = 30.0
    substeps: int = 4  # ground-truth simulation substeps per frame
    spp: int = 16
    seed: int = 0


def synthesize_sequence(out: str | Path, config: SynthConfig | None = None, progress: bool = True) -> dict:
    """Simulate and render one sequence into ``out`` (layout above); returns a summary dict."""
    from physinv.core.train import progress_bar
    from physinv.sft.cloth import Material, build_cloth, default_material, grid_cloth, simulate
    from physinv.sft.mitsuba import render_mesh
    from physinv.synth.variant import select_variant

    cfg = config or SynthConfig()
    for name, value, lo in (("--frames", cfg.frames, 2), ("--res", cfg.res, 8), ("--template-n", cfg.template_n, 2), ("--sim-n", cfg.sim_n, 2), ("--spp", cfg.spp, 1)):
        if value < lo:
            raise PhysinvError(f"{name}: must be >= {lo}, got {value}")
    if (cfg.sim_n - 1) % (cfg.template_n - 1) != 0:
        raise PhysinvError(f"--sim-n: (sim_n - 1) must be a multiple of (template_n - 1) so the template lies on the simulated grid, got {cfg.sim_n} and {cfg.template_n}")
    t0 = time.perf_counter()
    out = Path(out)
    rng = np.random.default_rng(cfg.seed)
    # ground-truth physics: the default material scaled per group, a wind, a moving handle
    base = default_material()
    scales = {"density": float(rng.uniform(0.7, 1.4)), "stretching": float(rng.uniform(0.5, 2.0)), "bending": float(rng.uniform(0.5, 4.0))}
    material = Material(base.density * scales["density"], base.stretching * scales["stretching"], base.bending * scales["bending"])
    wind = torch.tensor([rng.uniform(-1.5, 1.5), rng.uniform(0.0, 1.5), rng.uniform(-0.5, 0.5)], dtype=torch.float64)
    handle_move = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.15, 0.05), rng.uniform(0.0, 0.15)])

    v, f, uv = grid_cloth(cfg.sim_n, cfg.size)
    n = cfg.sim_n
    pins = torch.tensor([(n - 1) * n, n * n - 1])  # the two corners of the far edge (y = +size/2)
    t = torch.linspace(0, 1, cfg.frames, dtype=torch.float64)[:, None]
    ease = 0.5 - 0.5 * torch.cos(math.pi * t)
    path = v[pins][None].repeat(cfg.frames, 1, 1)
    path[:, 1] = path[:, 1] + ease * torch.as_tensor(handle_move)
    model = build_cloth(v, f, uv)
    with torch.no_grad():
        X = simulate(model, material, v, cfg.frames, 1.0 / cfg.fps, cfg.substeps, wind=wind, handle_idx=pins, handle_path=path, solver="sparse")
    X = X.numpy()
    if not np.isfinite(X).all():
        raise PhysinvError("sft synth: the ground-truth simulation diverged (try more --substeps)")

    # template: every k-th simulated vertex of frame 0
    k = (cfg.sim_n - 1) // (cfg.template_n - 1)
    tv, tf, tuv = grid_cloth(cfg.template_n, cfg.size)
    sel = np.array([(i * k) * n + j * k for i in range(cfg.template_n) for j in range(cfg.template_n)])
    np.testing.assert_allclose(X[0, sel], tv.numpy(), atol=1e-9)

    out.mkdir(parents=True, exist_ok=True)
    for sub in ("frames", "masks", "depth", "gt_points", "gt_meshes"):
        (out / sub).mkdir(exist_ok=True)
    texture = _texture_image(cfg.seed)
    write_image(out / "texture.png", texture)
    write_obj(out / "template.obj", X[0, sel], tf.numpy(), tuv.numpy())
    w2c, intr = default_camera(cfg.res)
    (out / "camera.json").write_text(json.dumps({"width": cfg.res, "height": cfg.res, "fx": intr[0], "fy": intr[1], "cx": intr[2], "cy": intr[3],
                                                 "world_to_camera": w2c.tolist()}, indent=2) + "\n")
    variant = select_variant()
    from physinv.io.images import linear_to_srgb

    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("sft synth", total=cfg.frames, info=variant)
        for i in range(cfg.frames):
            r = render_mesh(X[i], f.numpy(), w2c, intr, cfg.res, cfg.res, uvs=uv.numpy(), texture=out / "texture.png", spp=cfg.spp, seed=cfg.seed * 1000 + i, variant=variant)
            write_image(out / "frames" / f"{i:04d}.png", linear_to_srgb(np.clip(r["rgb"], 0.0, None)))  # over black
            write_image(out / "masks" / f"{i:04d}.png", r["mask"].astype(np.uint8) * 255)
            np.save(out / "depth" / f"{i:04d}.npy", r["depth"].astype(np.float32))
            np.save(out / "gt_points" / f"{i:04d}.npy", sample_surface(X[i], f.numpy(), GT_POINTS, seed=cfg.seed * 1000 + i))
            write_obj(out / "gt_meshes" / f"{i:04d}.obj", X[i], f.numpy())
            bar.update(task, advance=1)
    tn = cfg.template_n
    meta = {
        "fps": cfg.fps, "frames": cfg.frames, "generator": "physinv sft synth", "seed": cfg.seed, "config": cfg.__dict__,
        "handles": [(tn - 1) * tn, tn * tn - 1],  # template vertices held (one of them moves); the motion is not given
        "ground_truth": {"material_scales": scales, "density": float(material.density), "wind": wind.tolist(),
                         "handle_move": handle_move.tolist(), "texture": TEXTURES[cfg.seed % len(TEXTURES)], "renderer": f"mitsuba {variant}"},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {"out": str(out), "frames": cfg.frames, "resolution": [cfg.res, cfg.res], "template_vertices": cfg.template_n**2,
            "sim_vertices": cfg.sim_n**2, "seconds": round(time.perf_counter() - t0, 2), "variant": variant}
