"""``physinv view RUN``: a browser viewer of a trained run, built on ``viser``.

It shows the training cameras as frustums (with thumbnails), the meshes found in the run folder
(``*.ply``, ``*.obj``, ``*.glb``, e.g. from ``physinv nerf mesh``), and the run rendered from the
browser's camera at a low preview resolution (CPU-friendly: 64 pixels high by default), as the
scene's background image. A drop-down picks the output: for a NeRF run (``physinv nerf train``)
``rgb``, ``depth`` or ``opacity``; for a relighting run (``physinv relight fit``) ``rgb`` (under
the fitted light), ``albedo``, ``normal``, ``diffuse``, ``specular``, and ``relit`` under an
environment map given with ``--envmap`` (fitted with the run's SG lobe count); for an
Instance-NeRF run (``physinv instance fit``) ``instances`` (one colour per id, white background)
and the NeRF's ``rgb``.

The frame function, :func:`render_for_camera`, is pure (camera in, uint8 image out) so it is
tested without a browser; the server calls it from one render thread per client that always
renders the newest camera (dragging the view never queues stale frames).

viser's camera is ``T_world_camera`` in OpenCV axes (+z forward, +y down) with a vertical field
of view; physinv's ``c2w`` uses OpenGL axes: :func:`viewer_c2w` converts.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from physinv.errors import input_error

NERF_MODES = ("rgb", "depth", "opacity")
RELIGHT_MODES = ("rgb", "albedo", "normal", "diffuse", "specular")
INSTANCE_MODES = ("instances", "rgb")
MESH_EXTS = (".ply", ".obj", ".glb")
_FLIP = np.diag([1.0, -1.0, -1.0])  # OpenCV <-> OpenGL camera axes


def viewer_c2w(wxyz, position) -> torch.Tensor:
    """viser camera (unit quaternion wxyz (4,), position (3,); OpenCV axes) -> c2w (4, 4) float64, OpenGL axes."""
    w, x, y, z = (float(v) for v in wxyz)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    rot = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rot @ _FLIP, np.asarray(position, dtype=np.float64)
    return torch.as_tensor(c2w)


def c2w_to_viewer(c2w) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`viewer_c2w`: OpenGL c2w (4, 4) -> (wxyz (4,), position (3,))."""
    import viser.transforms as vtf

    m = np.asarray(c2w, dtype=np.float64)
    return vtf.SO3.from_matrix(m[:3, :3] @ _FLIP).wxyz, m[:3, 3].copy()


def preview_intrinsics(fov_y: float, aspect: float, height: int) -> tuple[torch.Tensor, int, int]:
    """Square-pixel pinhole of vertical field of view ``fov_y`` (radians) and ``aspect`` = W/H at
    ``height`` pixels: ``(fx, fy, cx, cy)`` (4,) float64, width, height."""
    height = max(1, int(height))
    width = max(1, int(round(height * aspect)))
    f = 0.5 * height / math.tan(0.5 * fov_y)
    return torch.tensor([f, f, 0.5 * width, 0.5 * height], dtype=torch.float64), width, height


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A display image in [0, 1], (H, W, 3) or (H, W) grey -> (H, W, 3) uint8 (clamped, rounded)."""
    img = image.detach().float()
    if img.dim() == 2:
        img = img.unsqueeze(-1).expand(*img.shape, 3)
    return (img.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


@dataclass
class Viewable:
    """A run the viewer can show: ``render(c2w (4, 4), intrinsics (4,), width, height, mode)`` ->
    display image in [0, 1] (H, W, 3) or (H, W); its ``modes``; the data folder it was trained on."""

    kind: str
    run: object
    modes: tuple[str, ...]
    data: Path | None
    light: object = None  # relight: the SG light fitted to --envmap (mode ``relit``)

    def render(self, c2w: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
        if mode not in self.modes:
            raise ValueError(f"mode: expected one of {', '.join(self.modes)} for a {self.kind} run, got '{mode}'")
        if self.kind == "instance":
            with torch.no_grad():
                if mode == "rgb":
                    return self.run.nerf.render_image(c2w, intrinsics, width, height)["rgb"]
                from physinv.instance.export import palette

                labels = self.run.render(c2w, intrinsics, width, height)["labels"]
            return torch.as_tensor(palette(labels.cpu().numpy()), device=labels.device)
        with torch.no_grad():
            if mode == "relit":
                out = self.run.render_image(c2w, intrinsics, width, height, light=self.light)
                mode = "rgb"
            else:
                out = self.run.render_image(c2w, intrinsics, width, height)
        if self.kind == "nerf":
            img = out[mode]
            return img / img.max().clamp(min=1e-8) if mode == "depth" else img
        from physinv.io.images import linear_to_srgb

        if mode == "normal":  # world normals to colours; background (no hit) black
            return (0.5 * (out["normal"] + 1.0)) * out["hit"].unsqueeze(-1).float()
        return linear_to_srgb(out[mode].clamp(min=0.0))  # the run renders linear radiance / albedo


def load_viewable(run_dir: str | Path, device: str | torch.device = "cpu", envmap: str | Path | None = None) -> Viewable:
    """A NeRF run (``config.nerf`` in its checkpoint), a relighting run (``config.relight``; with
    ``envmap``, an equirectangular map in Mitsuba's convention, the extra mode ``relit``) or an
    Instance-NeRF run (``config.field``)."""
    from physinv.core.train import CHECKPOINT_NAME, load_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise input_error(run_dir, None, "not a run folder (no checkpoint.pt)")
    config = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location="cpu").get("config", {})
    if "nerf" in config:
        from physinv.nerf.api import load_run

        run = load_run(run_dir, device)
        return Viewable("nerf", run, NERF_MODES, run.data)
    if "relight" in config:
        from physinv.relight.api import load_run as load_relight

        run = load_relight(run_dir, device)
        if envmap is None:
            return Viewable("relight", run, RELIGHT_MODES, run.data)
        from physinv.io.hdr import read_hdr

        light, _ = run.light_from_map(read_hdr(envmap)[..., :3])
        return Viewable("relight", run, RELIGHT_MODES + ("relit",), run.data, light)
    if envmap is not None:
        raise input_error(None, "--envmap", "only a relighting run can be relit")
    if "field" in config:
        from physinv.instance.pipeline import load_instance_run

        run = load_instance_run(run_dir, device)
        return Viewable("instance", run, INSTANCE_MODES, run.nerf.data)
    raise input_error(run_dir / CHECKPOINT_NAME, "config", "the viewer shows nerf, relight and instance runs; this checkpoint is none of them")


def render_for_camera(viewable: Viewable, wxyz, position, fov_y: float, aspect: float, height: int = 64, mode: str = "rgb") -> np.ndarray:
    """The frame the viewer shows for a viser camera (quaternion wxyz, position, vertical fov in
    radians, aspect W/H): the run rendered at ``height`` pixels, (H, W, 3) uint8."""
    intrinsics, width, height = preview_intrinsics(fov_y, aspect, height)
    return to_uint8(viewable.render(viewer_c2w(wxyz, position), intrinsics, width, height, mode))


@dataclass
class TrainingCamera:
    """One frustum: OpenGL c2w (4, 4), vertical fov (radians), aspect W/H, thumbnail (h, w, 3) uint8 or None."""

    c2w: np.ndarray
    fov_y: float
    aspect: float
    thumbnail: np.ndarray | None = None


def training_cameras(data: Path | None, thumbnail_height: int = 48, limit: int = 200) -> list[TrainingCamera]:
    """The training split's cameras of the data folder (none when the run has no data folder)."""
    if data is None:
        return []
    from physinv.io.images import read_image
    from physinv.io.transforms import read_transforms, split_path

    try:
        transforms = read_transforms(split_path(data, "train"))
    except ValueError:  # a data set moved or deleted since training: the viewer still works
        return []
    cams = []
    step = max(1, len(transforms.frames) // limit)
    for f in transforms.frames[::step]:
        thumb = None
        if f.image_path.is_file():
            import cv2

            img = read_image(f.image_path)[..., :3]
            h = min(thumbnail_height, img.shape[0])
            w = max(1, round(img.shape[1] * h / img.shape[0]))
            thumb = (np.clip(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA), 0, 1) * 255).astype(np.uint8)
        fov_y = 2.0 * math.atan(0.5 * f.height / float(f.intrinsics[1]))
        cams.append(TrainingCamera(np.asarray(f.c2w), fov_y, f.width / f.height, thumb))
    return cams


@dataclass
class Viewer:
    """A running viewer: the viser server, the run, and the per-client render threads."""

    viewable: Viewable
    server: object
    preview_height: int
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # one render at a time (CPU)

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    def stop(self) -> None:
        self._stop.set()
        self.server.stop()


def start_viewer(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, preview_height: int = 64, device: str | torch.device = "cpu", meshes: list[Path] | None = None, verbose: bool = False, envmap: str | Path | None = None) -> Viewer:
    """Load ``run_dir`` and start serving it (non-blocking); :meth:`Viewer.stop` ends it."""
    import viser

    run_dir = Path(run_dir)
    if preview_height < 8:
        raise input_error(None, "--preview", f"must be >= 8 pixels, got {preview_height}")
    viewable = load_viewable(run_dir, device, envmap)
    mesh_files = sorted(p for p in run_dir.iterdir() if p.suffix.lower() in MESH_EXTS) + [Path(m) for m in meshes or []]
    loaded_meshes = _load_meshes(mesh_files)  # bad files fail before the server starts
    server = viser.ViserServer(host=host, port=port, verbose=verbose)
    viewer = Viewer(viewable=viewable, server=server, preview_height=preview_height)
    cams = training_cameras(viewable.data)
    start = _start_pose(cams)
    size = 0.05 * float(np.median([np.linalg.norm(c.c2w[:3, 3] - start[1]) for c in cams])) if start else 0.1  # a twentieth of the camera distance
    for i, cam in enumerate(cams):
        wxyz, pos = c2w_to_viewer(cam.c2w)
        server.scene.add_camera_frustum(f"/cameras/{i:04d}", fov=cam.fov_y, aspect=cam.aspect, scale=size, thickness=2.0, thickness_units="screen",
                                        wxyz=wxyz, position=pos, image=cam.thumbnail)
    for name, mesh in loaded_meshes:
        server.scene.add_mesh_trimesh(f"/meshes/{name}", mesh)

    mode = server.gui.add_dropdown("output", viewable.modes, initial_value=viewable.modes[0])
    res = server.gui.add_slider("preview height (px)", min=16, max=512, step=8, initial_value=preview_height)

    def _client(client) -> None:
        latest: dict = {}
        wake = threading.Event()

        @client.camera.on_update
        def _(camera) -> None:
            latest["camera"] = (np.array(camera.wxyz), np.array(camera.position), float(camera.fov), float(camera.aspect))
            wake.set()

        def loop() -> None:
            while not viewer._stop.is_set():
                if not wake.wait(0.25):
                    continue
                wake.clear()
                wxyz, pos, fov, aspect = latest["camera"]
                with viewer._lock:
                    frame = render_for_camera(viewer.viewable, wxyz, pos, fov, aspect, int(res.value), str(mode.value))
                client.scene.set_background_image(frame, format="png")

        threading.Thread(target=loop, daemon=True, name=f"physinv-view-{client.client_id}").start()

    if start is not None:  # every browser starts behind the cameras, orbiting what they look at
        # (the server-wide initial camera: setting a connected client's camera instead would race
        # with viser reading that client's first camera message for the first render)
        server.initial_camera.up = start[2]
        server.initial_camera.position = start[0]
        server.initial_camera.look_at = start[1]
        server.initial_camera.fov = cams[0].fov_y
    server.on_client_connect(_client)
    return viewer


def _start_pose(cams: list[TrainingCamera]):
    """The viewer's first camera: twice as far from what the training cameras look at as they are,
    between the first camera's side and the cameras' mean direction, so the frustums and the scene
    are in view: (position, look-at point, up direction), or None with fewer than two cameras."""
    if len(cams) < 2:
        return None
    from physinv.core.camera import look_at_point

    c2w = torch.as_tensor(np.stack([c.c2w for c in cams]), dtype=torch.float64)
    centre = look_at_point(c2w)
    offsets = c2w[:, :3, 3] - centre
    dist = offsets.norm(dim=-1)
    first, mean = offsets[0] / dist[0], (offsets / dist[:, None]).mean(0)
    up = torch.nn.functional.normalize(c2w[:, :3, 1].mean(0), dim=0)
    direction = torch.nn.functional.normalize(first + mean, dim=0) if (first + mean).norm() > 1e-6 else first
    if abs(float(direction @ up)) > 0.99:  # looking straight along "up": fall back to the first camera's side
        direction = first
    eye = centre + 2.0 * dist.median() * direction
    return eye.numpy(), centre.numpy(), up.numpy()


def _load_meshes(paths: list[Path]) -> list[tuple[str, object]]:
    from physinv.io.mesh import load_mesh

    return [(Path(p).stem, load_mesh(p)) for p in paths]


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, preview_height: int = 64, device: str | torch.device = "cpu", meshes: list[Path] | None = None, envmap: str | Path | None = None) -> None:
    """``physinv view``: start the viewer and block until Ctrl+C."""
    import time

    viewer = start_viewer(run_dir, host, port, preview_height, device, meshes, verbose=True, envmap=envmap)
    print(f"physinv view: http://{host}:{viewer.port} (Ctrl+C to stop)", flush=True)
    try:
        while True:
            time.sleep(1.0)
    finally:
        viewer.stop()
