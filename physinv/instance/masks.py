"""Read a 2D instance-masks folder: one PNG per training view named after the view's image.

Format (DESIGN.md, "2D instance masks from any segmenter"): ``<masks>/r_000.png`` for the view
whose image is ``train/r_000.png``; integer ids (8- or 16-bit PNG, or ``.npy`` of the same stem),
arbitrary per view, 0 = unlabelled; optional ``classes.json`` ``{"r_000.png": {"17": "chair"}}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from physinv.errors import input_error
from physinv.io.images import read_labels


def mask_file(masks_dir: Path, image_path: str | Path) -> Path | None:
    """The mask of a view (``<stem>.png``, else ``<stem>.npy``), or None when neither exists."""
    stem = Path(image_path).stem
    for ext in (".png", ".npy"):
        if (masks_dir / f"{stem}{ext}").is_file():
            return masks_dir / f"{stem}{ext}"
    return None


def load_masks(masks_dir: str | Path, image_paths: list[Path], width: int, height: int) -> tuple[torch.Tensor, list[dict[int, str]] | None]:
    """Masks (N, H, W) int64 for the views whose images are ``image_paths``, and the per-view
    {id: class} maps of ``classes.json`` (None without it). A missing folder, a missing view, a
    wrong size or a malformed ``classes.json`` is a one-line error naming the file."""
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise input_error(masks_dir, None, "masks folder not found")
    missing = [Path(p).stem + ".png" for p in image_paths if mask_file(masks_dir, p) is None]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise input_error(masks_dir, None, f"no mask for {len(missing)} of {len(image_paths)} views: {', '.join(missing[:3])}{more}")
    masks = []
    for p in image_paths:
        f = mask_file(masks_dir, p)
        arr = read_labels(f)
        if arr.shape != (height, width):
            raise input_error(f, None, f"mask is {arr.shape[1]}x{arr.shape[0]} but its view {Path(p).name} is {width}x{height}")
        if arr.min() < 0:
            raise input_error(f, None, "negative ids (0 = unlabelled, instances > 0)")
        masks.append(arr)
    classes = None
    cfile = masks_dir / "classes.json"
    if cfile.is_file():
        try:
            raw = json.loads(cfile.read_text())
        except json.JSONDecodeError as err:
            raise input_error(cfile, None, f"not valid JSON (line {err.lineno}: {err.msg})") from None
        if not isinstance(raw, dict):
            raise input_error(cfile, None, "expected an object {mask file: {id: class}}")
        classes = []
        for p in image_paths:
            name = Path(p).stem + ".png"
            entry = raw.get(name, {})
            if not isinstance(entry, dict) or not all(isinstance(v, str) and k.isdigit() for k, v in entry.items()):
                raise input_error(cfile, name, "expected {id: class name}")
            classes.append({int(k): v for k, v in entry.items()})
    return torch.as_tensor(np.stack(masks)), classes
