"""The soft rasterizer: projection convention, hard limit vs Mitsuba 3, soft → hard as σ → 0,
tiling invariance, texture lookup, and silhouette gradients that point the right way."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physinv.core.raster import gaussian_blur, project, rasterize

torch.set_num_threads(1)


def _camera(distance=1.2, f=60.0, size=64):
    """OpenCV camera above the origin looking down -z (x right, y down in the image = -y world)."""
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]], dtype=torch.float64)
    w2c[2, 3] = distance
    return w2c, torch.tensor([f, f, (size - 1) / 2, (size - 1) / 2 - 3.0], dtype=torch.float64)


def _wavy_cloth(n=9, size=0.8):
    from physinv.sft.cloth import grid_cloth

    v, f, uv = grid_cloth(n, size)
    v = v.clone()
    v[:, 2] = 0.08 * torch.sin(5 * v[:, 0]) * torch.cos(3 * v[:, 1])
    v[:, :2] = v[:, :2] + 0.05
    rot = torch.tensor([[math.cos(0.4), -math.sin(0.4), 0], [math.sin(0.4), math.cos(0.4), 0], [0, 0, 1.0]], dtype=torch.float64)
    return v @ rot.T, f, uv


def test_projection_puts_pixel_centres_at_integers():
    w2c, K = _camera()
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]], dtype=torch.float64)
    px, z = project(pts, w2c, K)
    torch.testing.assert_close(px[0], K[2:])
    torch.testing.assert_close(px[1], K[2:] + torch.tensor([60 * 0.1 / 1.2, 0.0], dtype=torch.float64))
    torch.testing.assert_close(px[2], K[2:] + torch.tensor([0.0, -60 * 0.1 / 1.2], dtype=torch.float64))
    torch.testing.assert_close(z, torch.full((3,), 1.2, dtype=torch.float64))
    # one pixel-sized square centred on pixel (10, 20) covers that pixel only in the hard limit
    u0, v0 = 10.0, 20.0
    corners = torch.tensor([[u0 - 0.4, v0 - 0.4], [u0 + 0.4, v0 - 0.4], [u0 + 0.4, v0 + 0.4], [u0 - 0.4, v0 + 0.4]], dtype=torch.float64)
    world = torch.stack([(corners[:, 0] - K[2]) * 1.2 / 60, -(corners[:, 1] - K[3]) * 1.2 / 60, torch.zeros(4, dtype=torch.float64)], -1)
    out = rasterize(world, torch.tensor([[0, 1, 2], [0, 2, 3]]), w2c, K, 64, 64, hard=True)
    assert out.alpha.sum() == 1 and out.alpha[20, 10] == 1
    assert math.isclose(float(out.depth[20, 10]), 1.2, rel_tol=1e-12)


def test_hard_limit_matches_mitsuba():
    """Binary coverage of pixel centres and z-depth vs Mitsuba 3 (one exact sample per pixel centre)."""
    from physinv.sft.mitsuba import render_mesh

    v, f, _ = _wavy_cloth()
    w2c, K = _camera()
    ours = rasterize(v, f, w2c, K, 64, 64, hard=True)
    ref = render_mesh(v.numpy(), f.numpy(), w2c.numpy(), K.numpy(), 64, 64, spp=4)
    a, b = ours.alpha.numpy() > 0.5, ref["mask"]
    iou = (a & b).sum() / (a | b).sum()
    assert b.sum() > 500 and iou >= 0.98
    both = a & b
    np.testing.assert_allclose(ours.depth.numpy()[both], ref["depth"][both], rtol=2e-3)


def test_soft_coverage_tends_to_hard_as_sigma_shrinks():
    """The soft silhouette differs from the hard one in a band of width ~√σ around every edge
    (interior edges too: SoftRas' 1 − Π(1 − D) is ~0.75 on a shared edge), so the mean error
    shrinks like √σ."""
    v, f, _ = _wavy_cloth()
    w2c, K = _camera()
    hard = rasterize(v, f, w2c, K, 64, 64, hard=True).alpha
    errs = [float((rasterize(v, f, w2c, K, 64, 64, sigma=s).alpha - hard).abs().mean()) for s in (1e-2, 1e-4, 1e-6)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3
    assert 3 < errs[0] / errs[1] < 30 and 3 < errs[1] / errs[2] < 30


def test_tiles_and_chunks_do_not_change_the_image():
    v, f, uv = _wavy_cloth()
    w2c, K = _camera()
    tex = torch.rand(8, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = rasterize(v, f, w2c, K, 64, 48, uvs=uv, texture=tex, sigma=0.5, tile=16)
    b = rasterize(v, f, w2c, K, 64, 48, uvs=uv, texture=tex, sigma=0.5, tile=8, chunk_pairs=7)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_soft_render_gradients_match_finite_differences():
    """Colour, silhouette and depth of the textured soft render, differentiated w.r.t. the vertices
    (float64), against central differences on a few coordinates."""
    v, f, uv = _wavy_cloth(n=4)
    w2c, K = _camera(size=24)
    gen = torch.Generator().manual_seed(0)
    tex = torch.rand(8, 8, 3, dtype=torch.float64, generator=gen)
    weights = [torch.rand(24, 24, *extra, dtype=torch.float64, generator=gen) for extra in ((3,), (), ())]

    def loss(vertices):
        out = rasterize(vertices, f, w2c, K, 24, 24, uvs=uv, texture=tex, sigma=0.8, gamma=1e-2)
        return sum((w * x).sum() for w, x in zip(weights, (out.rgb, out.alpha, out.depth)))

    x = v.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x), x)
    eps = 1e-6
    for i, j in [(0, 0), (5, 1), (6, 2), (10, 0), (15, 1)]:
        d = torch.zeros_like(v)
        d[i, j] = eps
        fd = (loss(v + d) - loss(v - d)) / (2 * eps)
        assert float(grad[i, j]) == pytest.approx(float(fd), rel=1e-4, abs=1e-6), (i, j)
    assert float(grad.abs().sum()) > 1.0


def test_texture_lookup_follows_obj_uv_convention():
    """A fronto-parallel quad with uv (0,0) at its bottom-left shows the texture upright."""
    w2c, K = _camera(f=60.0)
    h = 0.5 * 64 * 1.2 / 60  # half-size that fills the image
    quad = torch.tensor([[-h, -h, 0], [h, -h, 0], [h, h, 0], [-h, h, 0]], dtype=torch.float64)
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    tex = torch.zeros(2, 2, 3, dtype=torch.float64)
    tex[0, 0, 0] = 1.0  # top-left texel red
    tex[1, 1, 2] = 1.0  # bottom-right texel blue
    out = rasterize(quad, torch.tensor([[0, 1, 2], [0, 2, 3]]), w2c, K, 64, 64, uvs=uv, texture=tex, hard=True)
    # the top-left image corner is world (-x, +y) = uv (0, 1) = the texture's top-left texel
    assert out.rgb[4, 6, 0] > 0.85 and out.rgb[4, 6, 2] < 0.15
    assert out.rgb[60, 60, 2] > 0.85 and out.rgb[60, 60, 0] < 0.15


@pytest.mark.parametrize("sigma_px, shape", [(7.0, (3, 40, 56)), (0.8, (2, 9, 5)), (4.0, (6, 6))])
def test_gaussian_blur_equals_kornias_in_values_and_gradients(sigma_px, shape):
    """The banded-matrix blur is kornia's zero-padded separable Gaussian (radius ⌈3σ⌉), also where
    the kernel is wider than the image."""
    from kornia.filters import gaussian_blur2d

    x = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    radius = max(1, math.ceil(3.0 * sigma_px))
    flat = x.reshape(-1, 1, *shape[-2:])
    ref = gaussian_blur2d(flat, (2 * radius + 1, 2 * radius + 1), torch.tensor([[sigma_px, sigma_px]], dtype=x.dtype), border_type="constant").reshape(shape)
    out = gaussian_blur(x, sigma_px)
    assert torch.allclose(out, ref, atol=1e-12)
    w = torch.rand(shape, dtype=torch.float64)
    (g_out,) = torch.autograd.grad((out * w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(g_out, g_ref, atol=1e-12)


def test_silhouette_gradient_of_a_translated_triangle_points_the_right_way():
    """Target = the triangle moved 3 px to the right; the gradient of the blurred-silhouette L1 loss
    w.r.t. the triangle's x-offset is non-zero and negative (moving right reduces the loss)."""
    w2c, K = _camera()
    tri = torch.tensor([[-0.15, -0.1, 0.0], [0.15, -0.1, 0.0], [0.0, 0.15, 0.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    shift_px = 3.0
    target = rasterize(tri + torch.tensor([shift_px * 1.2 / 60, 0, 0], dtype=torch.float64), faces, w2c, K, 64, 64, hard=True).alpha
    for blur in (0.0, 7.0 * 64 / 256):
        offset = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        moved = tri + torch.stack([offset[0], offset[0] * 0, offset[0] * 0])
        alpha = rasterize(moved, faces, w2c, K, 64, 64, sigma=1.0).alpha
        pred, tgt = (gaussian_blur(alpha, blur), gaussian_blur(target, blur)) if blur else (alpha, target)
        loss = (pred - tgt).abs().sum()
        (grad,) = torch.autograd.grad(loss, offset)
        assert float(grad) < 0 and abs(float(grad)) > 1.0
    # and the depth-aware colour of two overlapping triangles is the nearer one's
    near_tri = tri.clone()
    near_tri[:, 2] = 0.2
    both = torch.cat([tri, near_tri])
    cols = torch.cat([torch.tensor([[1.0, 0, 0]] * 3), torch.tensor([[0, 0, 1.0]] * 3)]).double()
    out = rasterize(both, torch.tensor([[0, 1, 2], [3, 4, 5]]), w2c, K, 64, 64, vertex_colors=cols, sigma=0.5)
    centre = project(torch.tensor([[0.0, 0.0, 0.2]], dtype=torch.float64), w2c, K)[0][0].round().long()
    assert out.rgb[centre[1], centre[0], 2] > 0.99


def test_batched_poses_equal_separate_renders_without_bleeding():
    """(B, V, 3) renders B frames in one pass, identical to B separate calls; soft coverage of a
    triangle at the bottom edge of frame 0 does not leak into the top rows of frame 1."""
    v, f, uv = _wavy_cloth()
    w2c, K = _camera()
    tex = torch.rand(8, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    low = v + torch.tensor([0.0, -0.55, 0.0], dtype=torch.float64)  # pushed over the bottom edge
    poses = torch.stack([low, v, v * 0.8])
    batch = rasterize(poses, f, w2c, K, 64, 48, uvs=uv, texture=tex, sigma=2.0)
    assert batch.alpha.shape == (3, 48, 64) and batch.rgb.shape == (3, 48, 64, 3)
    for b in range(3):
        one = rasterize(poses[b], f, w2c, K, 64, 48, uvs=uv, texture=tex, sigma=2.0)
        for x, y in zip(one, batch):
            torch.testing.assert_close(y[b], x, rtol=1e-10, atol=1e-12)
