"""Pinhole cameras and ray generation in the OpenGL convention of transforms.json.

Camera space: +x right, +y up, the camera looks along -z. ``c2w`` is camera-to-world (4, 4).
Pixels: (u, v) with u to the right and v downwards; pixel (i, j) covers [i, i+1) x [j, j+1), so its
centre is (i + 0.5, j + 0.5). Intrinsics are packed as ``(fx, fy, cx, cy)`` in pixels.
Ray directions are unit vectors, so a ray parameter ``t`` is a distance in scene units (metres),
and depth maps throughout physinv hold that distance along the ray, not camera z.

Lens distortion (optional everywhere a camera is used): ``distortion`` is ``(..., 6)``
``(k1, k2, k3, k4, p1, p2)``, nerfstudio's order, acting on normalised OpenCV image coordinates
``x = X/Z, y = Y/Z`` (y down), ``r2 = x^2 + y^2``::

    x_d = x (1 + k1 r2 + k2 r2^2 + k3 r2^3 + k4 r2^4) + 2 p1 x y + p2 (r2 + 2 x^2)
    y_d = y (1 + k1 r2 + k2 r2^2 + k3 r2^3 + k4 r2^4) + p1 (r2 + 2 y^2) + 2 p2 x y

and the pixel is ``u = fx x_d + cx``, ``v = fy y_d + cy``. With ``k4 = 0`` this is OpenCV's
five-coefficient model ``(k1, k2, p1, p2, k3)`` (``cv2.projectPoints``); ``k4`` is nerfstudio's
``r^8`` term, not OpenCV's rational-model ``k4``. COLMAP's SIMPLE_RADIAL / RADIAL / OPENCV
cameras are special cases (:mod:`physinv.io.colmap`). Rays through distorted pixels invert the
model with Newton's method (:func:`undistort_points`); ``distortion=None`` is the pinhole camera.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def intrinsics_from_fov(camera_angle_x: float, width: int, height: int) -> torch.Tensor:
    """Blender-style horizontal field of view (radians) -> ``(fx, fy, cx, cy)`` (4,), square pixels."""
    focal = 0.5 * width / math.tan(0.5 * camera_angle_x)
    return torch.tensor([focal, focal, 0.5 * width, 0.5 * height], dtype=torch.float64)


def intrinsics_matrix(intrinsics: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` (fx, fy, cx, cy) -> ``(..., 3, 3)`` K for the y-down pixel / z-forward convention."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([fx, zero, cx], -1), torch.stack([zero, fy, cy], -1), torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, -2)


DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def distort_points(xy: torch.Tensor, distortion: torch.Tensor) -> torch.Tensor:
    """Normalised undistorted image points (..., 2) (OpenCV axes, y down) -> distorted ones (..., 2).

    distortion: (..., 6) ``(k1, k2, k3, k4, p1, p2)`` broadcasting against ``xy`` (module docstring).
    """
    k1, k2, k3, k4, p1, p2 = distortion.to(xy.dtype).unbind(-1)
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return torch.stack([xd, yd], -1)


def undistort_points(xy_distorted: torch.Tensor, distortion: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Invert :func:`distort_points`: distorted normalised points (..., 2) -> undistorted (..., 2).

    Newton's method on the 2x2 system with the analytic Jacobian, started at the distorted point
    (as nerfstudio's ``radial_and_tangential_undistort``); for the moderate distortion of real
    lenses it converges to machine precision in a handful of steps (tested against OpenCV).
    A singular Jacobian (a point beyond the model's fold) leaves that point where it is.
    """
    k1, k2, k3, k4, p1, p2 = distortion.to(xy_distorted.dtype).unbind(-1)
    xd, yd = xy_distorted.unbind(-1)
    x, y = xd.clone(), yd.clone()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
        dradial_dr2 = k1 + r2 * (2.0 * k2 + r2 * (3.0 * k3 + r2 * 4.0 * k4))
        fx_ = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) - xd
        fy_ = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y - yd
        # d radial / dx = 2 x dradial_dr2 (and likewise for y)
        j_xx = radial + 2.0 * x * x * dradial_dr2 + 2.0 * p1 * y + 6.0 * p2 * x
        j_xy = 2.0 * x * y * dradial_dr2 + 2.0 * p1 * x + 2.0 * p2 * y
        j_yx = 2.0 * x * y * dradial_dr2 + 2.0 * p2 * y + 2.0 * p1 * x
        j_yy = radial + 2.0 * y * y * dradial_dr2 + 2.0 * p2 * x + 6.0 * p1 * y
        det = j_xx * j_yy - j_xy * j_yx
        ok = det.abs() > 1e-12
        safe = torch.where(ok, det, torch.ones_like(det))
        step_x = torch.where(ok, (fx_ * j_yy - fy_ * j_xy) / safe, torch.zeros_like(det))
        step_y = torch.where(ok, (fy_ * j_xx - fx_ * j_yx) / safe, torch.zeros_like(det))
        x, y = x - step_x, y - step_y
    return torch.stack([x, y], -1)


def camera_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, pixels: torch.Tensor, distortion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel positions.

    c2w: (N, 4, 4) or (4, 4) camera-to-world; intrinsics: (N, 4) or (4,) (fx, fy, cx, cy);
    pixels: (N, 2) continuous (u, v) positions (use ``+ 0.5`` for pixel centres);
    distortion: None (pinhole) or (N, 6) / (6,) ``(k1, k2, k3, k4, p1, p2)`` (module docstring):
    the ray goes through the scene point that the distorted lens images at the pixel.
    Returns origins (N, 3) and unit directions (N, 3) in world space.
    """
    fx, fy, cx, cy = intrinsics.to(pixels.dtype).unbind(-1)
    u, v = pixels.unbind(-1)
    x, y = (u - cx) / fx, (v - cy) / fy  # OpenCV normalised coordinates (y down)
    if distortion is not None:
        x, y = undistort_points(torch.stack([x, y], -1), distortion.to(pixels.device)).unbind(-1)
    dirs_cam = torch.stack([x, -y, -torch.ones_like(u)], -1)
    rot = c2w[..., :3, :3].to(pixels.dtype)
    dirs = (rot @ dirs_cam.unsqueeze(-1)).squeeze(-1)
    origins = c2w[..., :3, 3].to(pixels.dtype).expand_as(dirs)
    return origins, F.normalize(dirs, dim=-1)


def pixel_centres(width: int, height: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H*W, 2) pixel-centre coordinates (u, v) in row-major order (v outer, u inner)."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], -1)


def image_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int, distortion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All pixel-centre rays of one image: origins and unit directions, each (H, W, 3).

    distortion: None (pinhole) or (6,) ``(k1, k2, k3, k4, p1, p2)`` (module docstring)."""
    pixels = pixel_centres(width, height, device=c2w.device, dtype=c2w.dtype if c2w.is_floating_point() else torch.float32)
    o, d = camera_rays(c2w, intrinsics.to(c2w.device), pixels, distortion)
    return o.reshape(height, width, 3), d.reshape(height, width, 3)


def project(points: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor, distortion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (N, 3) -> pixel positions (N, 2) and camera-space depth along -z (N,).

    c2w: (4, 4) camera-to-world of one camera; intrinsics: (4,) (fx, fy, cx, cy) in pixels;
    distortion: None (pinhole) or (6,) ``(k1, k2, k3, k4, p1, p2)`` (module docstring).
    The depth is camera z (scene units), not the distance along the ray used by depth maps.

    This is K [R | t] with w2c = inverse(c2w), after flipping OpenGL y/z to the y-down, z-forward
    pixel convention.
    """
    w2c = torch.linalg.inv(c2w.to(points.dtype))
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    cv = cam * cam.new_tensor([1.0, -1.0, -1.0])  # OpenGL -> OpenCV camera axes
    if distortion is None:
        uvw = cv @ intrinsics_matrix(intrinsics.to(points.dtype)).T
        return uvw[:, :2] / uvw[:, 2:3], cv[:, 2]
    xy = distort_points(cv[:, :2] / cv[:, 2:3], distortion.to(points.device))
    fx, fy, cx, cy = intrinsics.to(points.dtype).unbind(-1)
    return torch.stack([fx * xy[:, 0] + cx, fy * xy[:, 1] + cy], -1), cv[:, 2]


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-world (4, 4) for a camera at ``eye`` looking at ``target`` (OpenGL axes)."""
    up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device) if up is None else up
    back = F.normalize(eye - target, dim=-1)  # +z points away from the target
    right = F.normalize(torch.linalg.cross(up, back), dim=-1)
    true_up = torch.linalg.cross(back, right)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def orbit_poses(n: int, radius: float, elevation_deg: float, target: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` cameras (n, 4, 4) on a circle around +z at ``elevation_deg`` above the xy-plane."""
    target = torch.zeros(3, dtype=dtype) if target is None else target.to(dtype)
    elev = math.radians(elevation_deg)
    poses = []
    for k in range(n):
        az = 2 * math.pi * k / n
        eye = target + radius * torch.tensor([math.cos(elev) * math.cos(az), math.cos(elev) * math.sin(az), math.sin(elev)], dtype=dtype)
        poses.append(look_at(eye, target))
    return torch.stack(poses)


def look_at_point(c2w: torch.Tensor) -> torch.Tensor:
    """The point (3,) closest, in least squares, to every camera's optical axis: what the cameras
    look at. c2w: (N, 4, 4) OpenGL axes (the optical axis is -z); needs two non-parallel axes."""
    o = c2w[:, :3, 3].double()
    d = F.normalize(-c2w[:, :3, 2].double(), dim=-1)
    eye = torch.eye(3, dtype=torch.float64, device=o.device)
    proj = eye - d.unsqueeze(-1) * d.unsqueeze(-2)  # (N, 3, 3) projectors orthogonal to each axis
    return torch.linalg.lstsq(proj.sum(0), (proj @ o.unsqueeze(-1)).sum(0)).solution.squeeze(-1).to(c2w.dtype)
