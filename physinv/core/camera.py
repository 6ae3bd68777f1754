"""Pinhole cameras and ray generation in the OpenGL convention of transforms.json.

Camera space: +x right, +y up, the camera looks along -z. ``c2w`` is camera-to-world (4, 4).
Pixels: (u, v) with u to the right and v downwards; pixel (i, j) covers [i, i+1) x [j, j+1), so its
centre is (i + 0.5, j + 0.5). Intrinsics are packed as ``(fx, fy, cx, cy)`` in pixels.
Ray directions are unit vectors, so a ray parameter ``t`` is a distance in scene units (metres),
and depth maps throughout physinv hold that distance along the ray, not camera z.
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


def camera_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel positions.

    c2w: (N, 4, 4) or (4, 4) camera-to-world; intrinsics: (N, 4) or (4,) (fx, fy, cx, cy);
    pixels: (N, 2) continuous (u, v) positions (use ``+ 0.5`` for pixel centres).
    Returns origins (N, 3) and unit directions (N, 3) in world space.
    """
    fx, fy, cx, cy = intrinsics.to(pixels.dtype).unbind(-1)
    u, v = pixels.unbind(-1)
    dirs_cam = torch.stack([(u - cx) / fx, -(v - cy) / fy, -torch.ones_like(u)], -1)
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


def image_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All pixel-centre rays of one image: origins and unit directions, each (H, W, 3)."""
    pixels = pixel_centres(width, height, device=c2w.device, dtype=c2w.dtype if c2w.is_floating_point() else torch.float32)
    o, d = camera_rays(c2w, intrinsics.to(c2w.device), pixels)
    return o.reshape(height, width, 3), d.reshape(height, width, 3)


def project(points: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (N, 3) -> pixel positions (N, 2) and camera-space depth along -z (N,).

    c2w: (4, 4) camera-to-world of one camera; intrinsics: (4,) (fx, fy, cx, cy) in pixels.
    The depth is camera z (scene units), not the distance along the ray used by depth maps.

    This is K [R | t] with w2c = inverse(c2w), after flipping OpenGL y/z to the y-down, z-forward
    pixel convention.
    """
    w2c = torch.linalg.inv(c2w.to(points.dtype))
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    cv = cam * cam.new_tensor([1.0, -1.0, -1.0])  # OpenGL -> OpenCV camera axes
    uvw = cv @ intrinsics_matrix(intrinsics.to(points.dtype)).T
    return uvw[:, :2] / uvw[:, 2:3], cv[:, 2]


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
