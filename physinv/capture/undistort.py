"""Undistort photos once (the alternative to distorting rays at generation time).

The output is a pinhole image with the same principal point and a focal length scaled so that
every output pixel sees the inside of the source image (no black borders). The resampling map
is built from :func:`physinv.core.camera.distort_points` (the one distortion model of physinv,
including nerfstudio's ``r^8`` term that OpenCV lacks) and applied with ``cv2.remap``.
"""

from __future__ import annotations

import numpy as np
import torch

from physinv.core.camera import distort_points, pixel_centres


def _source_pixels(out_intrinsics: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Output pixel positions (N, 2) of the pinhole camera ``out_intrinsics`` -> where the distorted
    camera sees the same ray (N, 2), both in physinv's pixel convention (centres at +0.5)."""
    fx, fy, cx, cy = out_intrinsics
    xy = torch.as_tensor(np.stack([(pixels[:, 0] - cx) / fx, (pixels[:, 1] - cy) / fy], -1), dtype=torch.float64)
    xd = distort_points(xy, torch.as_tensor(distortion, dtype=torch.float64)).numpy()
    return np.stack([intrinsics[0] * xd[:, 0] + intrinsics[2], intrinsics[1] * xd[:, 1] + intrinsics[3]], -1)


def undistorted_intrinsics(intrinsics: np.ndarray, distortion: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics (4,) for the undistorted image: same principal point, focal lengths scaled
    by the smallest factor whose border pixel centres map between the source's outermost pixel
    centres (bisection on the border pixels); no distortion leaves them unchanged."""
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    border = np.concatenate([
        np.stack([np.arange(width) + 0.5, np.full(width, 0.5)], -1), np.stack([np.arange(width) + 0.5, np.full(width, height - 0.5)], -1),
        np.stack([np.full(height, 0.5), np.arange(height) + 0.5], -1), np.stack([np.full(height, width - 0.5), np.arange(height) + 0.5], -1),
    ])

    def inside(scale: float) -> bool:
        k = intrinsics * np.array([scale, scale, 1.0, 1.0])
        src = _source_pixels(k, intrinsics, distortion, border)
        # between the outermost pixel centres: bilinear resampling never reads past the photo
        tol = 1e-9
        return bool(np.all((src[:, 0] >= 0.5 - tol) & (src[:, 0] <= width - 0.5 + tol) & (src[:, 1] >= 0.5 - tol) & (src[:, 1] <= height - 0.5 + tol)))

    lo, hi = 0.25, 4.0  # focal scale: inside(hi) holds (zoomed in), inside(lo) usually not
    if inside(lo):
        hi = lo
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if inside(mid) else (mid, hi)
    return intrinsics * np.array([hi, hi, 1.0, 1.0])


def undistort_image(image: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray, nearest: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, C) or (H, W) image of the distorted camera -> (same-size pinhole image, its intrinsics (4,)).

    Bilinear resampling (``nearest`` for masks and labels)."""
    import cv2

    height, width = image.shape[:2]
    new_k = undistorted_intrinsics(intrinsics, distortion, width, height)
    pix = pixel_centres(width, height, dtype=torch.float64).numpy()
    src = _source_pixels(new_k, np.asarray(intrinsics, dtype=np.float64), np.asarray(distortion, dtype=np.float64), pix)
    src = src - 0.5  # OpenCV's pixel centres are at integers
    map_x = src[:, 0].reshape(height, width).astype(np.float32)
    map_y = src[:, 1].reshape(height, width).astype(np.float32)
    out = cv2.remap(np.ascontiguousarray(image), map_x, map_y, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, new_k
