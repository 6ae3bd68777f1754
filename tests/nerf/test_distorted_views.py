"""The NeRF loader distorts its rays: every sampled ray projects back to a pixel centre of its view."""

import math

import torch

from physinv.core.camera import intrinsics_from_fov, orbit_poses, project
from physinv.io.dataset import ViewSet
from physinv.nerf.train import sample_rays


def test_sample_rays_apply_each_views_distortion():
    n, H, W = 3, 12, 16
    c2w = orbit_poses(n, 3.0, 20.0).float()
    K = intrinsics_from_fov(math.radians(60), W, H).float().expand(n, 4).clone()
    dist = torch.tensor([[-0.3, 0.1, 0, 0, 0.002, 0.001], [0.0] * 6, [0.2, 0, 0, 0, 0, 0]])
    views = ViewSet(torch.rand(n, H, W, 3), None, c2w, K, W, H, torch.ones(3), None, {}, source=None, distortion=dist)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    o, d, _, _ = sample_rays(views, 64, g)
    g = torch.Generator().manual_seed(0)
    view = (torch.randint(0, n * H * W, (64,), generator=g) // (H * W))
    for i in range(64):
        pt = (o[i] + 2.5 * d[i]).double()[None]
        uv, _ = project(pt, c2w[view[i]].double(), K[view[i]].double(), dist[view[i]].double())
        frac = uv - uv.floor()
        assert torch.allclose(frac, torch.full_like(frac, 0.5), atol=1e-3), (i, uv)
    # ignoring the distortion would put the barrel view's corner rays elsewhere
    views.distortion = None
    o2, d2, _, _ = sample_rays(views, 64, torch.Generator().manual_seed(0))
    assert (d2 - d).norm(dim=-1).max() > 1e-2
