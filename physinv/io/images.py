"""Low-dynamic-range images: read/write as float32 in [0, 1], alpha compositing, sRGB transfer.

8- and 16-bit files are scaled to [0, 1] by their integer range; values are returned as stored
(sRGB-encoded for ordinary PNG/JPEG photos). RGBA files hold *straight* (not premultiplied) alpha,
as the NeRF Blender data does, so compositing is ``rgb * a + background * (1 - a)``.
Label images (instance ids) are read without scaling by :func:`read_labels`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from physinv.errors import PhysinvError, input_error

_HDR_EXTS = (".exr", ".hdr")


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise input_error(path, None, "image not found")
    if path.suffix.lower() == ".png":  # OpenCV keeps 16-bit colour PNGs (Pillow truncates them to 8 bit)
        import cv2

        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise input_error(path, None, "cannot read image (not a valid PNG file)")
        return _bgr_to_rgb(raw)
    try:
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as err:  # noqa: BLE001 - a decoder failure means a bad file
        raise input_error(path, None, f"cannot read image ({type(err).__name__}: {err})") from None


def _bgr_to_rgb(raw: np.ndarray) -> np.ndarray:
    if raw.ndim == 3 and raw.shape[-1] == 3:
        return np.ascontiguousarray(raw[..., ::-1])
    if raw.ndim == 3 and raw.shape[-1] == 4:
        return np.ascontiguousarray(raw[..., [2, 1, 0, 3]])
    return raw


def read_image(path: str | Path) -> np.ndarray:
    """Image file -> float32 (H, W, C) in [0, 1], C = 1, 3 or 4 (grey+alpha becomes RGBA).

    ``.exr``/``.hdr`` go through :func:`physinv.io.hdr.read_hdr` and are returned unclipped.
    """
    path = Path(path)
    if path.suffix.lower() in _HDR_EXTS:
        from physinv.io.hdr import read_hdr

        return read_hdr(path)
    raw = _load(path)
    if raw.ndim == 2:
        raw = raw[..., None]
    if raw.ndim != 3 or raw.shape[-1] not in (1, 2, 3, 4):
        raise input_error(path, None, f"unsupported image shape {tuple(raw.shape)}")
    if np.issubdtype(raw.dtype, np.integer):
        image = raw.astype(np.float32) / np.float32(np.iinfo(raw.dtype).max)
    elif raw.dtype == bool:
        image = raw.astype(np.float32)
    else:
        image = raw.astype(np.float32)
    if image.shape[-1] == 2:  # grey + alpha
        image = np.concatenate([image[..., :1].repeat(3, -1), image[..., 1:]], -1)
    return np.ascontiguousarray(image)


def read_labels(path: str | Path) -> np.ndarray:
    """Integer label image (e.g. a uint16 PNG of instance ids, or ``.npy``) -> int64 (H, W), no scaling."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        raw = load_npy(path)
    else:
        raw = _load(path)
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim != 2 or not (np.issubdtype(raw.dtype, np.integer) or raw.dtype == bool):
        raise input_error(path, None, f"expected a single-channel integer label image, got {raw.dtype} {tuple(raw.shape)}")
    return raw.astype(np.int64)


def load_npy(path: str | Path) -> np.ndarray:
    """``np.load`` without pickles; a bad or missing file is a one-line ``PhysinvError``."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "file not found")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise input_error(path, None, f"cannot read .npy ({type(err).__name__}: {err})") from None


def to_uint(array: np.ndarray, bits: int = 8) -> np.ndarray:
    """Float in [0, 1] -> uint8/uint16 with rounding (values are clipped)."""
    top = (1 << bits) - 1
    dtype = np.uint8 if bits == 8 else np.uint16
    return (np.clip(np.nan_to_num(np.asarray(array, dtype=np.float64)), 0.0, 1.0) * top + 0.5).astype(dtype)


def write_image(path: str | Path, array: np.ndarray, bits: int = 8) -> Path:
    """Write (H, W), (H, W, 1|3|4) floats in [0, 1] (or uint8/uint16 as they are) to PNG/JPEG/...

    ``.exr``/``.hdr`` go through :func:`physinv.io.hdr.write_hdr`. ``bits`` = 8 or 16 for float input
    (16 needs PNG). Torch tensors are accepted (moved to the CPU for writing).
    """
    path = Path(path)
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if path.suffix.lower() in _HDR_EXTS:
        from physinv.io.hdr import write_hdr

        return write_hdr(path, array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise PhysinvError(f"{path}: cannot write an image of shape {tuple(array.shape)}")
    if array.dtype not in (np.uint8, np.uint16):
        if bits not in (8, 16):
            raise PhysinvError(f"{path}: bits must be 8 or 16, got {bits}")
        array = to_uint(array, bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == np.uint16 and array.ndim == 3:  # Pillow cannot write 16-bit colour
        import cv2

        if path.suffix.lower() != ".png" or not cv2.imwrite(str(path), _bgr_to_rgb(array)):  # RGB<->BGR is its own inverse
            raise PhysinvError(f"{path}: 16-bit colour images must be PNG")
        return path
    import imageio.v3 as iio

    iio.imwrite(path, array)
    return path


def composite(rgba, background):
    """Straight-alpha RGBA (..., 4) over a background colour (3,) or image (..., 3) -> RGB (..., 3).

    Works on numpy arrays and torch tensors alike (same type out as in). RGB input is returned as it is.
    """
    if rgba.shape[-1] == 3:
        return rgba
    if rgba.shape[-1] != 4:
        raise PhysinvError(f"composite: expected (..., 4) RGBA, got shape {tuple(rgba.shape)}")
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    if hasattr(rgba, "detach"):  # torch
        import torch

        bg = torch.as_tensor(background, dtype=rgba.dtype, device=rgba.device)
    else:
        bg = np.asarray(background, dtype=rgba.dtype)
    return rgb * alpha + bg * (1 - alpha)


def srgb_to_linear(srgb):
    """sRGB-encoded values in [0, 1] -> linear (IEC 61966-2-1). numpy or torch."""
    if hasattr(srgb, "detach"):
        import torch

        return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb.clamp(min=0.0) + 0.055) / 1.055) ** 2.4)
    srgb = np.asarray(srgb)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((np.maximum(srgb, 0.0) + 0.055) / 1.055) ** 2.4).astype(srgb.dtype)


def linear_to_srgb(linear):
    """Linear values -> sRGB-encoded (IEC 61966-2-1); negative values are clamped to 0. numpy or torch."""
    if hasattr(linear, "detach"):
        import torch

        lin = linear.clamp(min=0.0)
        return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)
    lin = np.maximum(np.asarray(linear), 0.0)
    return np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.maximum(lin, 0.0031308) ** (1 / 2.4) - 0.055).astype(np.asarray(linear).dtype)
