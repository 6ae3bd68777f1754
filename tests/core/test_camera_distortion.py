"""Lens distortion of core.camera against OpenCV's projection (cv2.projectPoints) and its own inverse."""

import math

import cv2
import numpy as np
import pytest
import torch

from physinv.core.camera import camera_rays, distort_points, intrinsics_from_fov, orbit_poses, project, undistort_points

# (k1, k2, k3, k4, p1, p2): a strong barrel lens with decentring, a pincushion one, a radial-only one
LENSES = [
    [-0.28, 0.09, -0.012, 0.0, 0.0012, -0.0007],
    [0.12, -0.03, 0.004, 0.0, -0.002, 0.001],
    [-0.05, 0.0, 0.0, 0.0, 0.0, 0.0],
]


def _opencv_camera(c2w: torch.Tensor):
    """COLMAP/OpenCV extrinsics (rvec, tvec) of an OpenGL c2w."""
    w2c = torch.linalg.inv(c2w @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))).numpy()
    return cv2.Rodrigues(w2c[:3, :3])[0], w2c[:3, 3].copy()


@pytest.mark.parametrize("lens", LENSES)
def test_projection_matches_cv2_project_points(lens):
    g = torch.Generator().manual_seed(1)
    K = torch.tensor([70.0, 72.0, 33.2, 23.7], dtype=torch.float64)  # off-centre, non-square
    dist = torch.tensor(lens, dtype=torch.float64)
    k1, k2, k3, _, p1, p2 = lens
    for c2w in orbit_poses(4, 4.0, 30.0):
        pts = torch.rand(50, 3, generator=g, dtype=torch.float64) - 0.5
        uv, _ = project(pts, c2w, K, dist)
        rvec, tvec = _opencv_camera(c2w)
        Kcv = np.array([[K[0], 0, K[2]], [0, K[1], K[3]], [0, 0, 1]], dtype=np.float64)
        ref, _ = cv2.projectPoints(pts.numpy(), rvec, tvec, Kcv, np.array([k1, k2, p1, p2, k3]))
        assert np.abs(uv.numpy() - ref[:, 0]).max() < 1e-3


@pytest.mark.parametrize("lens", LENSES + [[-0.2, 0.05, 0.0, -0.003, 0.001, 0.0]])
def test_distorted_ray_hits_the_point_projected_to_its_pixel(lens):
    """camera_rays inverts project: the ray through a distorted pixel passes through the 3D point."""
    g = torch.Generator().manual_seed(2)
    K = intrinsics_from_fov(math.radians(50), 64, 48)
    dist = torch.tensor(lens, dtype=torch.float64)
    for c2w in orbit_poses(3, 4.0, 20.0):
        pts = torch.rand(40, 3, generator=g, dtype=torch.float64) - 0.5
        uv, _ = project(pts, c2w, K, dist)
        o, d = camera_rays(c2w.expand(40, 4, 4), K.expand(40, 4), uv, dist.expand(40, 6))
        t = ((pts - o) * d).sum(-1)
        assert torch.allclose(o + t[:, None] * d, pts, atol=1e-9)


def test_undistort_matches_cv2_undistort_points_and_zero_lens_is_pinhole():
    lens = LENSES[0]
    k1, k2, k3, _, p1, p2 = lens
    g = torch.Generator().manual_seed(3)
    xy_d = (torch.rand(200, 2, generator=g, dtype=torch.float64) - 0.5) * 0.9
    ours = undistort_points(xy_d, torch.tensor(lens, dtype=torch.float64))
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)
    ref = cv2.undistortPoints(xy_d.numpy()[:, None], np.eye(3), np.array([k1, k2, p1, p2, k3]), None, None, None, criteria)[:, 0]
    assert np.abs(ours.numpy() - ref).max() < 1e-9
    assert torch.allclose(distort_points(ours, torch.tensor(lens, dtype=torch.float64)), xy_d, atol=1e-12)
    # no distortion: the same rays as the pinhole camera
    K = intrinsics_from_fov(math.radians(40), 32, 32)
    c2w = orbit_poses(1, 3.0, 10.0)[0]
    pix = torch.rand(30, 2, generator=g, dtype=torch.float64) * 32
    o0, d0 = camera_rays(c2w, K, pix)
    o1, d1 = camera_rays(c2w, K, pix, torch.zeros(6, dtype=torch.float64))
    assert torch.allclose(d0, d1, atol=1e-12)
