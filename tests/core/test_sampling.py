"""Samplers: ray-box clipping, stratified bins, inverse-CDF sampling, occupancy-grid marching."""

import numpy as np
import torch
from scipy import stats

from physinv.core.sampling import OccupancyGrid, march_uniform, ray_aabb_intersect, sample_pdf, stratified_samples


def test_ray_aabb_intersect_known_distances():
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    o = torch.tensor([[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [-3.0, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    tn, tf, hit = ray_aabb_intersect(o, d, aabb)
    assert hit.tolist() == [True, True, False, False]
    assert torch.allclose(tn[:2], torch.tensor([2.0, 0.0])) and torch.allclose(tf[:2], torch.tensor([4.0, 1.0]))


def test_stratified_one_sample_per_bin():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    t = stratified_samples(near, far, 16, perturb=True, generator=torch.Generator().manual_seed(0))
    bins = ((t - near[:, None]) / (far - near)[:, None] * 16).floor()
    assert torch.equal(bins, torch.arange(16.0).expand(2, 16))


def test_sample_pdf_follows_the_weights_ks():
    # piecewise-constant pdf on [0, 4] with bins of different mass
    edges = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    w = torch.tensor([[0.1, 0.0, 0.6, 0.3]], dtype=torch.float64)
    s = sample_pdf(edges, w, 20000, generator=torch.Generator().manual_seed(0))[0].numpy()

    def cdf(x):
        cw = np.concatenate([[0], np.cumsum(w[0].numpy() / w.sum().item())])
        return np.interp(x, edges[0].numpy(), cw)

    ks = stats.kstest(s, cdf)
    assert ks.statistic < 0.015
    assert ((s > 1.0) & (s < 2.0)).mean() < 1e-3  # (only the eps floor) nothing where the weight is 0
    det = sample_pdf(edges, w, 11, deterministic=True)[0]
    assert torch.all(det[1:] >= det[:-1])


def test_march_uniform_covers_interval_exactly():
    tn, tf = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 3.05])
    for jitter in (None, torch.tensor([0.3, 0.5, 0.9])):
        s = march_uniform(tn, tf, 0.1, jitter=jitter)
        lengths = torch.zeros(3).index_add(0, s.ray_indices, s.deltas)
        assert torch.allclose(lengths, tf - tn, atol=1e-5)
        assert (s.ray_indices != 1).all()  # empty ray gets no sample
        assert (s.deltas <= 0.1 + 1e-6).all()


def _blob_density(points):
    # a ball of radius 0.2 at (0.3, -0.2, 0.1) with density 50, empty elsewhere
    r = torch.linalg.norm(points - torch.tensor([0.3, -0.2, 0.1]), dim=-1)
    return torch.where(r < 0.2, 50.0, 0.0)


def test_occupancy_grid_never_culls_density():
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    grid = OccupancyGrid(aabb, resolution=32, decay=0.95, threshold=0.01, step=2 * 3**0.5 / 128, warmup_steps=2)
    torch.manual_seed(0)
    for _ in range(6):
        grid.update(_blob_density)
    # every point with density is in an occupied cell, and most of the box is culled
    pts = torch.rand(200000, 3) * 2 - 1
    dense = _blob_density(pts) > 0
    assert grid.is_occupied(pts[dense]).all()
    assert grid.occupied.float().mean() < 0.1
    # marching through the ball keeps samples only near it, and rendering loses nothing
    o = torch.tensor([[-3.0, -0.2, 0.1], [-3.0, 0.8, 0.8]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    s = grid.sample(o, d, step=0.01)
    assert (s.ray_indices == 0).sum() >= 0.4 / 0.01 - 1 and (s.ray_indices == 1).sum() == 0
    t_near, t_far, _ = ray_aabb_intersect(o[:1], d[:1], aabb)
    full = march_uniform(t_near, t_far, 0.01)
    dens_full = _blob_density(o[0] + d[0] * full.t_mids[:, None])
    dens_kept = _blob_density(o[0] + d[0] * s.t_mids[s.ray_indices == 0][:, None])
    assert torch.isclose(dens_full.sum(), dens_kept.sum())


def test_occupancy_grid_decays_stale_density():
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    grid = OccupancyGrid(aabb, resolution=8, decay=0.5, threshold=0.01, warmup_steps=100)
    grid.update(lambda p: torch.full((p.shape[0],), 1.0))
    assert grid.occupied.all()
    for _ in range(10):
        grid.update(lambda p: torch.zeros(p.shape[0]))
    assert torch.allclose(grid.density, torch.full_like(grid.density, 0.5**10))
