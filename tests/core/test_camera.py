"""Cameras: a point projected by K[R|t] lies on the ray generated through its pixel."""

import math

import torch

from physinv.core.camera import camera_rays, image_rays, intrinsics_from_fov, look_at, orbit_poses, project


def test_projected_point_is_hit_by_its_pixel_ray():
    g = torch.Generator().manual_seed(0)
    K = intrinsics_from_fov(math.radians(40), 64, 48)
    for c2w in orbit_poses(5, 4.0, 25.0):
        pts = (torch.rand(20, 3, generator=g, dtype=torch.float64) - 0.5)
        uv, z = project(pts, c2w, K)
        assert (z > 0).all()
        o, d = camera_rays(c2w.expand(20, 4, 4), K.expand(20, 4), uv)
        t = ((pts - o) * d).sum(-1)  # distance along the unit ray
        assert torch.allclose(o + t[:, None] * d, pts, atol=1e-9)
        # depth along the ray is the Euclidean distance from the camera
        assert torch.allclose(t, torch.linalg.norm(pts - c2w[:3, 3], dim=-1), atol=1e-9)


def test_centre_pixel_looks_along_minus_z_and_v_goes_down():
    c2w = look_at(torch.tensor([0.0, -3.0, 0.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    K = intrinsics_from_fov(math.radians(60), 32, 32)
    o, d = image_rays(c2w, K, 32, 32)
    centre = 0.25 * (d[15, 15] + d[15, 16] + d[16, 15] + d[16, 16])
    assert torch.allclose(torch.nn.functional.normalize(centre, dim=0), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-9)
    assert d[0, 16, 2] > 0 and d[-1, 16, 2] < 0  # top row looks up (+z world up)
    assert torch.allclose(torch.linalg.norm(d, dim=-1), torch.ones(32, 32, dtype=torch.float64))
