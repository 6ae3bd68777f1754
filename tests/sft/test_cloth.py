"""The differentiable cloth simulator: forces vs energies, stiffness vs Hessian, the material
lookups, free fall, a cloth pinned at two corners, energy behaviour of implicit Euler, handles,
and gradients with respect to every parameter vs finite differences (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from physinv.errors import PhysinvError
from physinv.sft.cloth import (
    DEFAULT_STRETCHING,
    Material,
    bending_energy,
    bending_stiffness,
    build_cloth,
    default_material,
    dihedral_angle,
    dihedral_gradient,
    implicit_step,
    grid_cloth,
    internal_forces,
    simulate,
    stretching_energy,
    stretching_stiffness,
    vertex_masses,
    _strain_terms,
)

torch.set_num_threads(1)
NO_GRAVITY = torch.zeros(3, dtype=torch.float64)


def _dense(rows, cols, vals, n):
    return torch.zeros(n, n, dtype=vals.dtype).index_put((rows, cols), vals, accumulate=True)


def _isotropic_material(k0=500.0, k1=50.0, k3=100.0) -> Material:
    """A table whose rows are all equal: the stiffness does not depend on the strain."""
    mat = default_material()
    row = torch.tensor([k0, k1, k0, k3], dtype=torch.float64)
    return Material(mat.density, row.repeat(6, 1), mat.bending[:, :1].repeat(1, 5))


@pytest.fixture
def patch():
    v, f, uv = grid_cloth(4, 0.3)
    return v, f, uv, build_cloth(v, f, uv)


def test_dihedral_gradient_matches_autograd(patch):
    v, _, _, model = patch
    x = (v + 0.03 * torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    auto = torch.autograd.grad(dihedral_angle(x, model.edges).sum(), x)[0]
    closed = torch.zeros_like(v).index_add(0, model.edges.reshape(-1), dihedral_gradient(x.detach(), model.edges).reshape(-1, 3))
    torch.testing.assert_close(closed, auto, rtol=1e-9, atol=1e-9)


def test_forces_are_energy_gradients(patch):
    """f = −∂E/∂x with the stiffness lookups frozen at x (as ArcSim): stretching + bending."""
    v, _, _, model = patch
    mat = default_material()
    x = v + 0.02 * torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, _, G = _strain_terms(x, model)
    k = stretching_stiffness(G, mat.stretching)
    kb = bending_stiffness(dihedral_angle(x, model.edges), model, mat.bending)
    xg = x.clone().requires_grad_(True)
    energy = stretching_energy(xg, model, mat.stretching, k) + bending_energy(xg, model, mat.bending, kb)
    grad = torch.autograd.grad(energy, xg)[0]
    force = internal_forces(x, model, mat, with_jacobian=False)[0]
    torch.testing.assert_close(force, -grad, rtol=1e-10, atol=1e-10)


def test_stiffness_is_the_hessian_in_tension(patch):
    """K = −∂f/∂x exactly for a flat patch in tension and a strain-independent table."""
    v, _, _, model = patch
    mat = _isotropic_material()
    V = v.shape[0]
    x = v * torch.tensor([1.08, 1.04, 1.0], dtype=torch.float64)
    x = x + 1e-3 * torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda y: internal_forces(y.reshape(V, 3), model, mat, with_jacobian=False)[0].reshape(-1), x.reshape(-1))
    _, rows, cols, vals = internal_forces(x, model, mat)
    torch.testing.assert_close(_dense(rows, cols, vals, 3 * V), -jac, rtol=1e-9, atol=1e-8)


def test_system_matrix_is_spd(patch):
    """Deviation 3: K stays positive semi-definite in compression and crumpled states."""
    v, _, _, model = patch
    V = v.shape[0]
    gen = torch.Generator().manual_seed(4)
    for scale in (0.8, 0.95, 1.1):
        x = v * scale + 0.03 * torch.randn(v.shape, dtype=torch.float64, generator=gen)
        _, rows, cols, vals = internal_forces(x, model, default_material())
        K = _dense(rows, cols, vals, 3 * V)
        torch.testing.assert_close(K, K.T, rtol=0, atol=1e-9)
        assert torch.linalg.eigvalsh(K).min() > -1e-9 * K.abs().max()


def test_stretching_lookup_is_symmetric():
    """Deviation 1: row 0 at zero strain, the 0° / 90° rows past 1/6 strain along warp / weft, and
    mirror-image strains read the same stiffness."""
    table = torch.tensor(DEFAULT_STRETCHING, dtype=torch.float64)
    G = torch.zeros(4, 2, 2, dtype=torch.float64)
    G[1, 0, 0] = 0.3  # warp
    G[2, 1, 1] = 0.3  # weft
    G[3] = torch.tensor([[0.1, 0.05], [0.05, 0.02]])
    mirrored = G[3].clone()
    mirrored[0, 1] = mirrored[1, 0] = -0.05
    k = stretching_stiffness(torch.cat([G, mirrored[None]]), table)
    torch.testing.assert_close(k[0], table[0])
    torch.testing.assert_close(k[1], table[1].clamp_min(0))
    torch.testing.assert_close(k[2], table[5].clamp_min(0))
    torch.testing.assert_close(k[3], k[4])


def test_bending_is_symmetric_in_fold_direction(patch):
    """Deviation 2: a fold up and the same fold down are equally stiff; 0 curvature reads column 0."""
    _, _, _, model = patch
    table = default_material().bending
    theta = torch.linspace(0.05, 1.0, model.edges.shape[0], dtype=torch.float64)
    torch.testing.assert_close(bending_stiffness(theta, model, table), bending_stiffness(-theta, model, table))
    flat = bending_stiffness(torch.zeros_like(theta), model, table)
    assert torch.all((flat >= table[:, 0].min() - 1e-15) & (flat <= table[:, 0].max() + 1e-15))


def test_masses_sum_to_density_times_area(patch):
    _, _, _, model = patch
    total = vertex_masses(model, torch.tensor(0.25, dtype=torch.float64)).sum()
    assert math.isclose(float(total), 0.25 * 0.3 * 0.3, rel_tol=1e-12)


def test_free_fall_matches_g_t2_over_2(patch):
    """Without wind or pins, internal forces vanish and implicit Euler gives x_n = −g h² n(n+1)/2;
    as h → 0 this converges to g t²/2 at first order."""
    v, _, _, model = patch
    t_end, errors = 1.0 / 3.0, []
    for substeps in (1, 2, 4):
        X = simulate(model, default_material(), v, 11, 1 / 30, substeps)
        n, h = 10 * substeps, 1 / 30 / substeps
        drop = -X[-1, :, 2]
        torch.testing.assert_close(drop, torch.full_like(drop, 9.8 * h * h * n * (n + 1) / 2), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(X[-1, :, :2], v[:, :2], rtol=0, atol=1e-12)
        errors.append(float(drop.mean()) - 0.5 * 9.8 * t_end**2)
    assert errors[0] > 0 and 1.8 < errors[0] / errors[1] < 2.2 and 1.8 < errors[1] / errors[2] < 2.2


def test_cloth_pinned_at_two_corners_comes_to_rest_where_forces_balance():
    v, f, uv = grid_cloth(5, 0.4)
    model = build_cloth(v, f, uv)
    mat = default_material()
    pins = torch.tensor([0, 4])  # the two corners of the first row
    path = v[pins][None].expand(400, -1, -1)
    X = simulate(model, mat, v, 400, 0.2, 1, handle_idx=pins, handle_path=path)
    torch.testing.assert_close(X[:, pins], path, rtol=0, atol=1e-12)
    x = X[-1]
    assert float((X[-1] - X[-2]).norm(dim=-1).max()) < 1e-6  # at rest
    mass = vertex_masses(model, mat.density)
    f_total = internal_forces(x, model, mat, with_jacobian=False)[0] + mass[:, None] * torch.tensor([0, 0, -9.8], dtype=torch.float64)
    free = torch.ones(25, dtype=torch.bool)
    free[pins] = False
    weight = float(mass.sum() * 9.8)
    assert float(f_total[free].norm(dim=-1).max()) < 1e-4 * weight  # every free vertex in balance
    # the pins carry the whole weight: their reactions are −f_total
    torch.testing.assert_close(-f_total[pins].sum(0), torch.tensor([0.0, 0.0, weight], dtype=torch.float64), rtol=0, atol=1e-4 * weight)
    assert float(x[:, 2].min()) < -0.05  # and it did sag


def _total_energy(x, v, model, mat):
    mass = vertex_masses(model, mat.density)
    kinetic = 0.5 * (mass[:, None] * v * v).sum()
    return kinetic + stretching_energy(x, model, mat.stretching) + bending_energy(x, model, mat.bending)


def test_energy_of_undamped_stretched_patch_decays_at_first_order():
    """No physical damping: implicit Euler alone damps a mode of frequency ω by 1/(1 + ω²h²) per
    step, so the relative energy lost over a fixed time is O(h): halving h halves it."""
    v, f, uv = grid_cloth(3, 0.2)
    model = build_cloth(v, f, uv)
    mat = _isotropic_material()
    x0 = v * torch.tensor([1.01, 1.0, 1.0], dtype=torch.float64)
    e0 = float(_total_energy(x0, torch.zeros_like(x0), model, mat))
    losses = []
    for steps in (25, 50, 100):
        x, vel = x0, torch.zeros_like(x0)
        for _ in range(steps):
            x, vel = implicit_step(x, vel, model, mat, 0.002 / steps, gravity=NO_GRAVITY)
        losses.append(1.0 - float(_total_energy(x, vel, model, mat)) / e0)
    assert 0 < losses[2] < losses[1] < losses[0] < 0.5
    assert 1.7 < losses[0] / losses[1] < 2.2 and 1.7 < losses[1] / losses[2] < 2.2
    assert float((x - x0).abs().max()) > 1e-4  # it did oscillate


def test_handle_follows_script():
    """Deviation 4: scripted vertices land exactly on their path at every frame."""
    v, f, uv = grid_cloth(3, 0.2)
    model = build_cloth(v, f, uv)
    idx = torch.tensor([0, 2])
    t = torch.linspace(0, 1, 6, dtype=torch.float64)[:, None, None]
    path = v[idx][None] + t * torch.tensor([0.05, 0.0, 0.1], dtype=torch.float64)
    X = simulate(model, default_material(), v, 6, 1 / 30, 3, handle_idx=idx, handle_path=path)
    torch.testing.assert_close(X[:, idx], path, rtol=0, atol=1e-12)


def _scene(dtype=torch.float64):
    v, f, uv = grid_cloth(3, 0.2, dtype=dtype)
    model = build_cloth(v, f, uv)
    idx = torch.tensor([0, 2])
    path = v[idx][None].expand(4, -1, -1)
    return v, model, idx, path


def _loss_fn(solver="dense"):
    v, model, idx, path = _scene()
    weights = torch.randn(4, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def loss(density, stretching, bending, wind, correctives):
        mat = Material(density, stretching, bending)
        X = simulate(model, mat, v, 4, 1 / 30, 2, wind=wind, correctives=correctives, handle_idx=idx, handle_path=path, solver=solver)
        return (X * weights).sum()

    mat = default_material()
    params = [mat.density, mat.stretching, mat.bending, torch.tensor([0.3, -0.2, 1.5], dtype=torch.float64),
              0.05 * torch.randn(3, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))]
    return loss, params


@pytest.mark.parametrize("which", ["density", "stretching", "bending", "wind", "correctives"])
def test_gradients_match_finite_differences(which):
    """Autograd through the dense implicit solves vs a central difference along a random direction."""
    loss, params = _loss_fn()
    i = ["density", "stretching", "bending", "wind", "correctives"].index(which)
    p = [q.clone().requires_grad_(j == i) for j, q in enumerate(params)]
    grad = torch.autograd.grad(loss(*p), p[i])[0]
    direction = torch.randn(params[i].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    scale = float(params[i].abs().max()) if which != "correctives" else 0.05
    eps = 1e-6 * scale
    plus = [q.clone() for q in params]
    minus = [q.clone() for q in params]
    plus[i] = params[i] + eps * direction
    minus[i] = params[i] - eps * direction
    fd = (float(loss(*plus)) - float(loss(*minus))) / (2 * eps)
    analytic = float((grad * direction).sum())
    assert abs(analytic) > 1e-12
    assert math.isclose(analytic, fd, rel_tol=1e-5, abs_tol=1e-9 * abs(fd) + 1e-12)


def test_sparse_solvers_match_dense():
    """Deviation 6: the adjoint sparse-LU and conjugate-gradient paths give the same positions and gradients."""
    grads = {}
    for solver in ("dense", "sparse", "cg"):
        loss, params = _loss_fn(solver)
        p = [q.clone().requires_grad_(True) for q in params]
        value = loss(*p)
        grads[solver] = (float(value.detach()), torch.autograd.grad(value, p))
    for solver in ("sparse", "cg"):
        assert math.isclose(grads["dense"][0], grads[solver][0], rel_tol=1e-9)
        for a, b in zip(grads["dense"][1], grads[solver][1]):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9 * float(a.abs().max()))


def test_bad_templates_raise():
    v, f, uv = grid_cloth(3, 0.2)
    with pytest.raises(PhysinvError, match="degenerate"):
        build_cloth(torch.cat([v, v[:1]]), torch.cat([f, torch.tensor([[0, 1, 9]])]), None)
    with pytest.raises(PhysinvError, match="non-manifold"):
        extra = torch.cat([v, torch.tensor([[0.0, 0.0, 0.3]], dtype=torch.float64)])
        build_cloth(extra, torch.cat([f, torch.tensor([[0, 4, 9]])]), None)
