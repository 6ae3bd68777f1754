"""Load a multi-view split (transforms + images + optional per-view maps) into tensors.

``load_views(data_dir, split)`` is what every multi-view pipeline reads. Images are composited on
the background (the data set's own ``background`` field, else white), so ``images`` is always RGB;
``alpha`` keeps the coverage when the files have it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from physinv.core.camera import camera_rays
from physinv.errors import PhysinvError, input_error
from physinv.io.images import composite, load_npy, read_image, read_labels
from physinv.io.transforms import light_file, read_transforms, split_path

MAP_KINDS = ("depth", "normal", "albedo", "instance", "mask")


@dataclass
class ViewSet:
    """A split of posed views, as tensors on one device.

    images: (N, H, W, 3) float32 in [0, 1], composited on ``background`` (values as stored, i.e.
    sRGB-encoded for PNGs); alpha: (N, H, W) float32 coverage, or None when the files have none;
    c2w: (N, 4, 4) float32 camera-to-world (OpenGL axes); intrinsics: (N, 4) float32 (fx, fy, cx, cy)
    in pixels; width/height in pixels; background: (3,); aabb: (2, 3) scene box or None;
    maps: requested per-view maps: ``depth`` (N, H, W) distance along the unit ray (0 = background),
    ``normal`` (N, H, W, 3) world-space unit normals (0 = background), ``albedo`` (N, H, W, 3)
    as stored (physinv.synth writes sRGB-encoded base colour; see ``io.images.srgb_to_linear``),
    ``instance`` (N, H, W) int64 (0 = background), ``mask`` (N, H, W) float32 (nerfstudio masks,
    1 = use the pixel); source: the transforms file; lights: per-view ``light`` names or None;
    envmaps: the top-level ``envmaps`` as {name: absolute path}; frames_extras: the per-frame
    extras as read; envmap_to_world: (3, 3) rotation of the env maps' local frame (Mitsuba's
    equirectangular convention) into the world, identity when the data set has none;
    distortion: (N, 6) float32 ``(k1, k2, k3, k4, p1, p2)`` per view (:mod:`physinv.core.camera`;
    zeros for pinhole views), or None when no view is distorted. Ray generation must pass it on.
    """

    images: torch.Tensor
    alpha: torch.Tensor | None
    c2w: torch.Tensor
    intrinsics: torch.Tensor
    width: int
    height: int
    background: torch.Tensor
    aabb: torch.Tensor | None
    maps: dict[str, torch.Tensor]
    source: Path
    lights: list[str | None] = field(default_factory=list)
    envmaps: dict[str, Path] = field(default_factory=dict)
    frames_extras: list[dict] = field(default_factory=list)
    envmap_to_world: torch.Tensor = field(default_factory=lambda: torch.eye(3))
    distortion: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> "ViewSet":
        """Same views on ``device``."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ViewSet(
            mv(self.images), mv(self.alpha), mv(self.c2w), mv(self.intrinsics), self.width, self.height,
            mv(self.background), mv(self.aabb), {k: mv(v) for k, v in self.maps.items()}, self.source,
            list(self.lights), dict(self.envmaps), list(self.frames_extras), self.envmap_to_world.to(device), mv(self.distortion),
        )

    def rays(self, view: torch.Tensor | int, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Origins and unit directions (n, 3) of the rays through ``pixels`` (n, 2) (continuous (u, v);
        ``+ 0.5`` for pixel centres) of view ``view`` (an index, or (n,) indices), through each view's
        lens distortion when the data set has one. Every training loop draws its rays here."""
        distortion = None if self.distortion is None else self.distortion[view]
        return camera_rays(self.c2w[view], self.intrinsics[view], pixels, distortion)

    def light_path(self, index: int) -> Path:
        """The environment map file of view ``index``'s ``light``: an ``envmaps`` entry, else a path
        relative to the data folder. A view without ``light`` or a name with no map is a ``PhysinvError``."""
        light = self.lights[index] if index < len(self.lights) else None
        where = f"frames[{index}].light"
        if light is None:
            raise input_error(self.source.name, where, "missing (this command needs each frame's environment map)")
        if light in self.envmaps:
            return Path(self.envmaps[light])
        path = light_file(self.source.parent, light)
        if not path.is_file():
            known = f" (envmaps: {', '.join(sorted(self.envmaps))})" if self.envmaps else ""
            raise input_error(self.source.name, where, f"'{light}' names no map: not an envmaps entry{known} and no file {path}")
        return path


def light_sets(names: list[str | None]) -> tuple[list[int], list[str | None]]:
    """Frames' ``light`` names -> (set index per frame, name per set): frames naming the same light
    share one set (named sets first, sorted), every frame without a name gets its own set. The one
    grouping rule of per-illumination unknowns: NeRD's SG lights (``relight.nerd``) and the
    appearance codes of ``nerf`` (``NerfConfig.appearance_dim``)."""
    named = sorted({n for n in names if n is not None})
    index = {n: i for i, n in enumerate(named)}
    sets: list[str | None] = list(named)
    per_frame = []
    for n in names:
        if n is None:
            per_frame.append(len(sets))
            sets.append(None)
        else:
            per_frame.append(index[n])
    return per_frame, sets


def _check_size(array: np.ndarray, path: Path, width: int, height: int, reference: Path) -> None:
    h, w = array.shape[:2]
    if (w, h) != (width, height):
        raise input_error(path, None, f"image is {w}x{h} but {reference.name} is {width}x{height} (all views must have the same size)")


def _read_map(kind: str, path: Path) -> np.ndarray:
    if kind == "instance":
        return read_labels(path)
    if path.suffix.lower() == ".npy":
        arr = load_npy(path).astype(np.float32)
    else:
        arr = read_image(path)
    if kind == "depth" or kind == "mask":
        if arr.ndim == 3:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise input_error(path, None, f"expected a single-channel {kind} map, got shape {tuple(arr.shape)}")
    else:  # normal, albedo
        if arr.ndim != 3 or arr.shape[-1] < 3:
            raise input_error(path, None, f"expected a 3-channel {kind} map, got shape {tuple(arr.shape)}")
        arr = arr[..., :3]
    return arr


def load_views(
    data_dir: str | Path,
    split: str = "train",
    background: Sequence[float] | torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    maps: Sequence[str] = (),
) -> ViewSet:
    """Read ``transforms_<split>.json`` (or ``transforms.json``) under ``data_dir`` with its images.

    background: RGB in [0, 1] to composite RGBA images on; None = the data set's ``background``
    field, else white. maps: any of ``depth, normal, albedo, instance, mask`` (each frame must have
    the matching ``<kind>_path``). Mixed image sizes, missing images or maps raise ``PhysinvError``
    naming the file.
    """
    unknown = [m for m in maps if m not in MAP_KINDS]
    if unknown:
        raise PhysinvError(f"load_views: unknown map kind(s) {', '.join(unknown)} (known: {', '.join(MAP_KINDS)})")
    path = split_path(data_dir, split)
    transforms = read_transforms(path)
    if background is None:
        background = transforms.extras.get("background", [1.0, 1.0, 1.0])
    bg = np.asarray(background.detach().cpu() if isinstance(background, torch.Tensor) else background, dtype=np.float32)
    if bg.shape != (3,):
        raise PhysinvError(f"load_views: background must be 3 values (r, g, b), got {bg.tolist()}")

    first = transforms.frames[0]
    width, height = first.width, first.height
    images, alphas, any_alpha = [], [], False
    loaded_maps: dict[str, list[np.ndarray]] = {m: [] for m in maps}
    for i, frame in enumerate(transforms.frames):
        if (frame.width, frame.height) != (width, height):
            raise input_error(path.name, f"frames[{i}]", f"view is {frame.width}x{frame.height} but frames[0] is {width}x{height} (all views must have the same size)")
        if not frame.image_path.is_file():
            raise input_error(frame.image_path, None, f"image not found (frames[{i}].file_path in {path.name})")
        image = read_image(frame.image_path)
        _check_size(image, frame.image_path, width, height, first.image_path if i else path)
        if image.shape[-1] == 1:
            image = image.repeat(3, -1)
        if image.shape[-1] == 4:
            any_alpha = True
            alphas.append(image[..., 3])
            image = composite(image, bg)
        else:
            alphas.append(np.ones(image.shape[:2], np.float32))
        images.append(image)
        for kind in maps:
            key = f"{kind}_path"
            if key not in frame.extras:
                raise input_error(path.name, f"frames[{i}].{key}", f"missing (asked for the {kind} maps)")
            arr = _read_map(kind, frame.extras[key])
            _check_size(arr, frame.extras[key], width, height, first.image_path)
            loaded_maps[kind].append(arr)

    def tensor(arrays, dtype):
        return torch.as_tensor(np.stack(arrays), dtype=dtype).to(device)

    aabb = transforms.extras.get("aabb")
    envmaps = {e["name"]: e["file_path"] for e in transforms.extras.get("envmaps", [])}
    return ViewSet(
        images=tensor(images, torch.float32),
        alpha=tensor(alphas, torch.float32) if any_alpha else None,
        c2w=tensor([f.c2w for f in transforms.frames], torch.float32),
        intrinsics=tensor([f.intrinsics for f in transforms.frames], torch.float32),
        width=width,
        height=height,
        background=torch.as_tensor(bg, dtype=torch.float32).to(device),
        aabb=None if aabb is None else torch.as_tensor(aabb, dtype=torch.float32).to(device),
        maps={k: tensor(v, torch.int64 if k == "instance" else torch.float32) for k, v in loaded_maps.items()},
        source=path,
        lights=[f.extras.get("light") for f in transforms.frames],
        envmaps=envmaps,
        frames_extras=[dict(f.extras) for f in transforms.frames],
        envmap_to_world=torch.as_tensor(transforms.extras.get("envmap_to_world", np.eye(3)), dtype=torch.float32).to(device),
        distortion=None if all(f.distortion is None for f in transforms.frames)
        else tensor([np.zeros(6) if f.distortion is None else f.distortion for f in transforms.frames], torch.float32),
    )
