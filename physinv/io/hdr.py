"""High-dynamic-range images (environment maps): OpenEXR ``.exr`` and Radiance ``.hdr``.

``.exr`` goes through the ``OpenEXR`` bindings (float32, channels R, G, B; a Y-only file is
broadcast to grey), ``.hdr`` through OpenCV (imageio's backend for it; RGBE, about 1% relative precision).
Values are linear radiance, unclipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from physinv.errors import PhysinvError, input_error

HDR_EXTS = (".exr", ".hdr")


def read_hdr(path: str | Path) -> np.ndarray:
    """``.exr`` / ``.hdr`` file -> float32 (H, W, 3) linear values."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in HDR_EXTS:
        raise input_error(path, None, f"not an HDR image (expected {' or '.join(HDR_EXTS)})")
    if not path.is_file():
        raise input_error(path, None, "HDR image not found")
    try:
        image = _read_exr(path) if ext == ".exr" else _read_radiance(path)
    except PhysinvError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise input_error(path, None, f"cannot read HDR image ({type(err).__name__}: {err})") from None
    return np.ascontiguousarray(image, dtype=np.float32)


def write_hdr(path: str | Path, array) -> Path:
    """Write (H, W), (H, W, 1|3|4) linear floats to ``.exr`` (float32) or ``.hdr`` (RGBE). Alpha is dropped."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in HDR_EXTS:
        raise PhysinvError(f"{path}: not an HDR file name (expected {' or '.join(HDR_EXTS)})")
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    image = np.asarray(array, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise PhysinvError(f"{path}: cannot write an HDR image of shape {tuple(image.shape)}")
    if image.shape[-1] == 1:
        image = image.repeat(3, -1)
    image = np.ascontiguousarray(image[..., :3])
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".exr":
        import OpenEXR

        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with OpenEXR.File(header, {"RGB": image}) as f:
            f.write(str(path))
    else:
        import cv2  # imageio's opencv plugin casts floats to 8 bit on write; call OpenCV directly

        if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
            raise PhysinvError(f"{path}: OpenCV could not write the .hdr file")
    return path


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        channels = f.channels()
        names = {n.split(".")[-1].upper(): n for n in channels}
        if all(c in names for c in "RGB"):
            image = np.stack([np.asarray(channels[names[c]].pixels, dtype=np.float32) for c in "RGB"], -1)
        elif "Y" in names:
            image = np.asarray(channels[names["Y"]].pixels, dtype=np.float32)[..., None].repeat(3, -1)
        else:
            raise input_error(path, None, f"no R, G, B or Y channels (found {', '.join(sorted(channels))})")
    return image


def _read_radiance(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    if image is None:
        raise input_error(path, None, "cannot read HDR image (OpenCV could not decode it)")
    return np.asarray(image[..., ::-1], dtype=np.float32)
