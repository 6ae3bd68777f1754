"""Foreground masks for captures: user masks from a folder, and two tools for photos taken on a
uniform background (no downloaded segmentation weights): a colour key and OpenCV's GrabCut.

Masks are (H, W) float32 in [0, 1], 1 = object. A converter stores a mask as the image's alpha,
so :func:`physinv.io.dataset.load_views` composites the photo on the data set's background and
the fields learn an empty background there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from physinv.errors import PhysinvError, input_error
from physinv.io.images import read_image

MASK_METHODS = ("key", "grabcut")
_MASK_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def find_mask(masks_dir: str | Path, image_name: str) -> Path:
    """The mask of ``image_name`` in ``masks_dir``: same stem with an image extension, or COLMAP's
    ``<image name>.png``. Missing -> ``PhysinvError`` naming the expected file."""
    masks_dir = Path(masks_dir)
    stem = Path(image_name).stem
    candidates = [masks_dir / f"{Path(image_name).name}.png"] + [masks_dir / f"{stem}{ext}" for ext in _MASK_EXTS]
    for c in candidates:
        if c.is_file():
            return c
    raise input_error(masks_dir / f"{stem}.png", None, f"mask not found for image '{image_name}' (--masks)")


def read_mask(path: str | Path, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Mask file -> (H, W) float32 in [0, 1] (the alpha channel of an RGBA file, else the first channel).
    With ``width``/``height`` a mask of another size is a ``PhysinvError``."""
    arr = read_image(path)
    mask = arr[..., 3] if arr.shape[-1] == 4 else arr[..., 0]
    if width is not None and mask.shape != (height, width):
        raise input_error(path, None, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {width}x{height}")
    return mask.astype(np.float32)


def border_colour(image: np.ndarray, border: int = 4) -> np.ndarray:
    """Median RGB (3,) of the image's outer ``border`` pixels: the background colour of an object photo."""
    b = max(1, min(border, image.shape[0] // 4, image.shape[1] // 4))
    ring = np.concatenate([image[:b].reshape(-1, 3), image[-b:].reshape(-1, 3), image[:, :b].reshape(-1, 3), image[:, -b:].reshape(-1, 3)])
    return np.median(ring, axis=0)


def colour_key_mask(image: np.ndarray, key: np.ndarray | None = None, tolerance: float = 0.1, clean: int = 1) -> np.ndarray:
    """Pixels farther than ``tolerance`` (Euclidean RGB distance, colours in [0, 1]) from the
    background ``key`` colour (3,) (default: :func:`border_colour`) are foreground.

    image: (H, W, 3) float in [0, 1]. ``clean``: radius in pixels of a morphological open + close
    (removes speckles and pinholes; 0 = none). Returns (H, W) float32 in {0, 1}.
    """
    import cv2

    rgb = np.asarray(image, dtype=np.float32)[..., :3]
    key = border_colour(rgb) if key is None else np.asarray(key, dtype=np.float32)
    fg = (np.linalg.norm(rgb - key, axis=-1) > tolerance).astype(np.uint8)
    if clean > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * clean + 1, 2 * clean + 1))
        fg = cv2.morphologyEx(cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
    return fg.astype(np.float32)


def grabcut_mask(image: np.ndarray, key: np.ndarray | None = None, tolerance: float = 0.1, iterations: int = 5, border: int = 2) -> np.ndarray:
    """OpenCV GrabCut started from the colour key: the outer ``border`` pixels are sure background,
    key-foreground pixels probable foreground, the rest probable background; ``iterations`` of
    GrabCut's colour-model / graph-cut alternation refine it (shadows, colour spill).

    image: (H, W, 3) float in [0, 1]. Returns (H, W) float32 in {0, 1}.
    """
    import cv2

    rgb = np.asarray(image, dtype=np.float32)[..., :3]
    init = colour_key_mask(rgb, key, tolerance, clean=0)
    mask = np.where(init > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    b = max(1, border)
    mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
    if not np.any(mask == cv2.GC_PR_FGD):
        return np.zeros(rgb.shape[:2], np.float32)
    bgr = np.ascontiguousarray((np.clip(rgb[..., ::-1], 0, 1) * 255).round().astype(np.uint8))
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(bgr, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)


def compute_mask(image: np.ndarray, method: str = "key", key: np.ndarray | None = None, tolerance: float = 0.1) -> np.ndarray:
    """``method`` ``key`` (:func:`colour_key_mask`) or ``grabcut`` (:func:`grabcut_mask`)."""
    if method == "key":
        return colour_key_mask(image, key, tolerance)
    if method == "grabcut":
        return grabcut_mask(image, key, tolerance)
    raise PhysinvError(f"--method: expected one of {', '.join(MASK_METHODS)}, got '{method}'")
