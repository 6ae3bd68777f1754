"""Fused CPU hash-grid kernel (physinv.core.hashgrid_cpu) against the pure-PyTorch reference.

Tolerances, float32 (tables U(-1, 1) so that differences are not hidden by the 1e-4 init): the two
forms compute the same corner rows and the same trilinear weights and sum the same 8 products per
feature, in another order (and the reference's dense levels get the position from ``grid_sample``).
Measured: values differ by at most 1.2e-7 (one ulp at |value| ~ 1), table gradients not at all,
x-gradients by 4e-7 of the largest entry. Bounds: values 1e-6 (eight ulps at |value| <= 2), table
gradients 1e-6 and x-gradients 2e-6 relative to the largest entry. The x-gradients are compared off
the cell boundaries, where the derivative jumps (a one-ulp position change picks the other cell).
"""

import pytest
import torch

from physinv.core import hashgrid_cpu
from physinv.core.encoding import HashGridEncoding, hash_grid_backend, hash_grid_encode

needs_kernel = pytest.mark.skipif(not hashgrid_cpu.available(), reason=f"fused kernel not built: {hashgrid_cpu.unavailable_reason()}")

# (levels, features, log2 T, N_min, N_max): mixed dense + hashed, all dense, all hashed, F = 1 / 4 / 8
LAYOUTS = [(6, 2, 12, 4, 64), (3, 4, 15, 2, 12), (4, 1, 8, 16, 128), (2, 8, 10, 5, 40)]


def _grid(layout, seed=0):
    torch.manual_seed(seed)
    enc = HashGridEncoding(*layout)
    with torch.no_grad():
        for t in enc.tables:
            t.uniform_(-1.0, 1.0)
    return enc


def _points(n=300, seed=1):
    """Random points plus the box faces and corners (coordinates exactly 0 and 1) and points outside."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    faces = x[:60].clone()
    faces[:20, 0], faces[20:40, 1], faces[40:60, 2] = 0.0, 1.0, 1.0
    faces[::3, 1] = 0.0
    corners = torch.tensor([[i, j, k] for i in (0.0, 1.0) for j in (0.0, 1.0) for k in (0.0, 1.0)])
    outside = torch.tensor([[-0.2, 0.5, 0.5], [0.5, 1.3, 0.5], [0.25, 0.5, -1e-3], [1.5, -2.0, 0.75]])
    return torch.cat([x, faces, corners, outside])


def _off_boundaries(x, resolutions, margin=1e-3):
    """Rows whose cell fraction is at least ``margin`` from 0 and 1 on every axis of every level."""
    ok = torch.ones(x.shape[0], dtype=torch.bool)
    for r in resolutions:
        frac = torch.frac(x.clamp(0, 1) * r)
        ok &= ((frac > margin) & (frac < 1 - margin)).all(-1)
    return ok


def _encode_with_grads(enc, x, backend, grad_out):
    tables = [t.detach().clone().requires_grad_() for t in enc.tables]
    xx = x.clone().requires_grad_()
    out = hash_grid_encode(xx, tables, enc.resolutions, enc.dense, backend=backend)
    out.backward(grad_out)
    return out.detach(), xx.grad, [t.grad for t in tables]


@needs_kernel
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: "L{}F{}T{}N{}-{}".format(*l))
def test_fused_matches_reference_values_and_gradients(layout):
    enc = _grid(layout)
    x = _points()
    grad_out = torch.randn(x.shape[0], enc.out_dim, generator=torch.Generator().manual_seed(2))
    ref, ref_gx, ref_gt = _encode_with_grads(enc, x, "torch", grad_out)
    out, gx, gt = _encode_with_grads(enc, x, "fused", grad_out)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max() <= 1e-6
    for a, b in zip(gt, ref_gt):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-6 * b.abs().max()
    # x-gradients: everywhere off the cell boundaries, including the face points (which are off
    # the boundaries in the two free coordinates only when the third one is exactly 0 or 1, so the
    # faces are compared below on their own) and the points outside the box (zero)
    interior = _off_boundaries(x, enc.resolutions) & (x > 0).all(-1) & (x < 1).all(-1)
    assert interior.sum() > 100
    scale = ref_gx.abs().max()
    assert (gx[interior] - ref_gx[interior]).abs().max() <= 2e-6 * scale
    axis_outside = (x < 0) | (x > 1)  # clamped coordinates: no gradient along them, in both forms
    assert axis_outside.sum() >= 5 and (gx[axis_outside] == 0).all() and (ref_gx[axis_outside] == 0).all()
    # the box faces: conventions of the reference (dense level: zero normal component, hashed: the inner cell's)
    face = ((x == 0) | (x == 1)).any(-1) & ((x >= 0) & (x <= 1)).all(-1)
    inner = x.clone()
    inner[(x == 0) | (x == 1)] = 0.5  # the face coordinate itself is not a cell fraction to test
    face &= _off_boundaries(inner, enc.resolutions)
    if face.any():
        assert (gx[face] - ref_gx[face]).abs().max() <= 2e-6 * scale


@needs_kernel
def test_fused_x_gradient_matches_finite_differences():
    # within a cell the encoding is trilinear, so along one axis it is exactly linear: a central
    # difference whose probes stay inside every level's cell equals the derivative up to rounding.
    # Dividing by the step actually taken ((x + h) - (x - h) in float32) leaves the rounding of the
    # outputs (~1e-6 on sums of ~10) over 2e-4: measured 6e-5 of the largest entry; bound 2e-4.
    enc = _grid(LAYOUTS[0])
    x = torch.rand(400, 3, generator=torch.Generator().manual_seed(3))
    x = x[_off_boundaries(x, enc.resolutions, margin=0.01)][:40]
    assert x.shape[0] == 40
    w = torch.randn(x.shape[0], enc.out_dim, generator=torch.Generator().manual_seed(4))
    xx = x.clone().requires_grad_()
    (hash_grid_encode(xx, list(enc.tables), enc.resolutions, enc.dense, backend="fused") * w).sum().backward()
    h = 1e-4  # 0.0064 of the finest cell (1/64) < the 0.01 margin: both probes stay in the cell
    with torch.no_grad():
        for a in range(3):
            e = torch.zeros(3)
            e[a] = h
            up = (hash_grid_encode(x + e, list(enc.tables), enc.resolutions, enc.dense, backend="fused") * w).sum(-1)
            down = (hash_grid_encode(x - e, list(enc.tables), enc.resolutions, enc.dense, backend="fused") * w).sum(-1)
            fd = (up - down) / ((x + e) - (x - e))[:, a]
            assert (fd - xx.grad[:, a]).abs().max() <= 2e-4 * xx.grad.abs().max()


@needs_kernel
def test_fused_backward_is_bit_identical_run_to_run_and_across_thread_counts():
    enc = _grid(LAYOUTS[0])
    # many points per row (coarse levels) so that the summation order matters
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(5))
    grad_out = torch.randn(x.shape[0], enc.out_dim, generator=torch.Generator().manual_seed(6))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = _encode_with_grads(enc, x, "fused", grad_out)
        second = _encode_with_grads(enc, x, "fused", grad_out)
        torch.set_num_threads(1)
        single = _encode_with_grads(enc, x, "fused", grad_out)
    finally:
        torch.set_num_threads(threads)
    for other in (second, single):
        assert torch.equal(first[0], other[0]) and torch.equal(first[1], other[1])
        assert all(torch.equal(a, b) for a, b in zip(first[2], other[2]))


@needs_kernel
def test_module_dispatch_and_training_step_match():
    torch.manual_seed(7)
    fused = HashGridEncoding(4, 2, 10, 4, 48)  # default backend "auto" -> the kernel on CPU float32
    ref = HashGridEncoding(4, 2, 10, 4, 48, backend="torch")
    ref.load_state_dict(fused.state_dict())
    x = torch.rand(256, 3)
    assert hash_grid_backend(x, list(fused.tables), fused.dense) == "fused"
    assert hash_grid_backend(x.double(), [t.double() for t in fused.tables], fused.dense) == "torch"
    assert hash_grid_backend(x, list(fused.tables), fused.dense, sparse_grad=True) == "torch"
    for enc in (fused, ref):
        opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            (enc(x) - 0.5).square().mean().backward()
            opt.step()
    for a, b in zip(fused.tables, ref.tables):
        assert (a - b).abs().max() <= 1e-6
    with torch.no_grad():  # inference skips autograd (and the Jacobian)
        assert (fused(x) - ref(x)).abs().max() <= 1e-6
    assert "backend=auto" in repr(fused)


@needs_kernel
def test_fused_edge_inputs():
    enc = _grid(LAYOUTS[2])
    empty = hash_grid_encode(torch.zeros(0, 3), list(enc.tables), enc.resolutions, enc.dense, backend="fused")
    assert empty.shape == (0, enc.out_dim)
    # NaN positions give NaN features (never an out-of-range read)
    x = torch.tensor([[float("nan"), 0.5, 0.5], [0.5, 0.5, 0.5]])
    out = hash_grid_encode(x, list(enc.tables), enc.resolutions, enc.dense, backend="fused")
    assert out[0].isnan().all() and out[1].isfinite().all()
    # a third order is not provided: a clear error, not a silent zero
    xx = torch.rand(8, 3, requires_grad=True)
    y = hash_grid_encode(xx, list(enc.tables), enc.resolutions, enc.dense, backend="fused")
    (g,) = torch.autograd.grad(y.sum(), xx, create_graph=True)
    (h,) = torch.autograd.grad(g.square().sum(), xx, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        h.sum().backward()


@needs_kernel
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_second_order_matches_reference(layout):
    """A loss on the x-gradient and on the table gradients of a first backward run with
    create_graph=True (NeRD's normals under the shading loss), differentiated once more: the fused
    kernel's gradients to x, grad_out and every table equal the reference's autograd ones. Measured
    3e-7 of the largest entry at most (the x-x term scales with N_l^2); bound 2e-6, off the cell
    boundaries where the derivatives jump."""
    enc = _grid(layout)
    x = _points()
    x = x[_off_boundaries(x, enc.resolutions) & ((x > 0) & (x < 1)).all(-1)]
    g = torch.Generator().manual_seed(2)
    w, v = torch.randn(x.shape[0], enc.out_dim, generator=g), torch.randn(x.shape[0], 3, generator=g)
    us = [torch.randn(t.shape, generator=g) for t in enc.tables]

    def second(backend):
        tables = [t.detach().clone().requires_grad_() for t in enc.tables]
        xx, gout = x.clone().requires_grad_(), w.clone().requires_grad_()
        out = hash_grid_encode(xx, tables, enc.resolutions, enc.dense, backend=backend)
        gx, *gt = torch.autograd.grad(out, [xx, *tables], gout, create_graph=True)
        ((gx * v).sum() + sum((a * u).sum() for a, u in zip(gt, us))).backward()
        return [gx.detach(), xx.grad, gout.grad, *[t.grad for t in tables]]

    for fused, ref in zip(second("fused"), second("torch")):
        assert (fused - ref).abs().max() <= 2e-6 * ref.abs().max()


def test_backend_errors_are_clear(monkeypatch):
    enc = HashGridEncoding(2, 2, 8, 4, 16)
    x = torch.rand(5, 3)
    with pytest.raises(ValueError, match=r"backend must be one of auto, torch, fused, got 'cuda'"):
        HashGridEncoding(2, 2, 8, 4, 16, backend="cuda")
    with pytest.raises(ValueError, match=r"backend must be one of auto, torch, fused, got 'numba'"):
        hash_grid_encode(x, list(enc.tables), enc.resolutions, enc.dense, backend="numba")
    with pytest.raises(ValueError, match=r"sparse_grad=True needs backend='torch'"):
        hash_grid_encode(x, list(enc.tables), enc.resolutions, enc.dense, sparse_grad=True, backend="fused")
    # not a CPU tensor (the meta device stands in for CUDA here) / not float32
    with pytest.raises(ValueError, match=r"backend='fused' unavailable: the fused hash-grid kernel runs on the CPU only \(x on meta\)"):
        hash_grid_encode(x.to("meta"), [t.to("meta") for t in enc.tables], enc.resolutions, enc.dense, backend="fused")
    with pytest.raises(ValueError, match=r"takes float32 positions and tables \(got x torch.float64"):
        hash_grid_encode(x.double(), [t.double() for t in enc.tables], enc.resolutions, enc.dense, backend="fused")
    # a machine without the build: "fused" says so and how to build, "auto" runs the reference
    monkeypatch.setattr(hashgrid_cpu, "_module", None)
    monkeypatch.setattr(hashgrid_cpu, "_load_error", "the fused CPU hash-grid kernel is not built (test)")
    with pytest.raises(ValueError, match=r"backend='fused' unavailable: the fused CPU hash-grid kernel is not built \(test\)"):
        hash_grid_encode(x, list(enc.tables), enc.resolutions, enc.dense, backend="fused")
    assert hash_grid_backend(x, list(enc.tables), enc.dense) == "torch"
    assert torch.equal(enc(x), hash_grid_encode(x, list(enc.tables), enc.resolutions, enc.dense, backend="torch"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fused_on_cuda_is_a_clear_error_and_auto_uses_the_reference():
    enc = HashGridEncoding(2, 2, 8, 4, 16).cuda()
    x = torch.rand(5, 3, device="cuda")
    assert hash_grid_backend(x, list(enc.tables), enc.dense) == "torch"
    assert enc(x).device.type == "cuda"
    with pytest.raises(ValueError, match=r"runs on the CPU only \(x on cuda"):
        hash_grid_encode(x, list(enc.tables), enc.resolutions, enc.dense, backend="fused")
