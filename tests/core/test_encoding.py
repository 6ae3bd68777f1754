"""Encodings: Fourier features, hash grid (layout, gradients), real spherical harmonics vs SciPy."""

import math

import numpy as np
import pytest
import torch
from scipy import special

from physinv.core.encoding import (
    FourierEncoding,
    HashGridEncoding,
    hash_grid_encode,
    hash_grid_levels,
    positional_encoding,
    spherical_harmonics,
)


def test_positional_encoding_layout_and_values():
    x = torch.tensor([[0.25, -0.5, 1.0]], dtype=torch.float64)
    enc = positional_encoding(x, 10)
    assert enc.shape == (1, 63) and FourierEncoding(3, 4).out_dim == 27
    assert torch.equal(enc[:, :3], x)
    k = 3  # sin(2^3 pi x) block starts at 3 + 3 * 2 * k
    assert torch.allclose(enc[0, 3 + 6 * k: 3 + 6 * k + 3], torch.sin(8 * math.pi * x[0]))
    assert torch.allclose(enc[0, 3 + 6 * k + 3: 3 + 6 * k + 6], torch.cos(8 * math.pi * x[0]))
    assert positional_encoding(x, 4, include_input=False).shape == (1, 24)


def test_positional_encoding_gradcheck():
    x = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: positional_encoding(p, 6), (x,))


def test_hash_grid_layout_dense_then_hashed():
    lay = hash_grid_levels(16, 19, 16, 2048)
    b = math.exp((math.log(2048) - math.log(16)) / 15)
    assert abs(float(lay["growth"]) - b) < 1e-12
    res = lay["resolution"].tolist()
    assert res[0] == 16 and res[-1] == 2048
    T = 2**19
    for r, d, size in zip(res, lay["dense"].tolist(), lay["table_size"].tolist()):
        assert d == ((r + 1) ** 3 <= T)
        assert size == ((r + 1) ** 3 if d else T)
    assert lay["dense"][0] and not lay["dense"][-1]


def test_hash_function_uses_instant_ngp_primes():
    from physinv.core.encoding import hash_grid_indices

    corners = torch.tensor([[[[3, 5, 7]] * 8]])  # (1, L=1, 8, 3)
    T = 2**10
    idx = hash_grid_indices(corners, torch.tensor([1000]), torch.tensor([T]), torch.tensor([False]))
    expected = (3 * 1 ^ 5 * 2654435761 ^ 7 * 805459861) % T
    assert idx[0, 0, 0].item() == expected


def test_hash_grid_interpolates_trilinearly_and_hits_vertices():
    # a linear function of the vertex coordinates is reproduced exactly by a dense level
    res = 4
    g = torch.stack(torch.meshgrid(*[torch.arange(res + 1, dtype=torch.float64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    # dense index = i + j (N+1) + k (N+1)^2 with (i, j, k) = (x, y, z) vertex coordinates
    order = g[:, 0] + g[:, 1] * (res + 1) + g[:, 2] * (res + 1) ** 2
    A = torch.tensor([[1.0, 0, 2], [0, 1, 0], [0, 0, 3]], dtype=torch.float64)
    lin = torch.zeros((res + 1) ** 3, 3, dtype=torch.float64)
    lin[order.long()] = g @ A
    x = torch.rand(50, 3, dtype=torch.float64)
    assert torch.allclose(hash_grid_encode(x, [lin], [res], [True]), (x * res) @ A, atol=1e-10)
    # the module: two small levels that both fit densely in 2^12 rows
    enc = HashGridEncoding(n_levels=2, n_features=3, log2_table_size=12, base_resolution=4, finest_resolution=8)
    assert enc(x.float()).shape == (50, 6) and enc.dense == [True, True]


def test_hash_grid_init_range():
    enc = HashGridEncoding(n_levels=4, log2_table_size=10, base_resolution=4, finest_resolution=32)
    t = torch.cat([p.detach().reshape(-1) for p in enc.tables])
    assert t.abs().max() <= 1e-4 and t.std() > 1e-5
    assert [p.shape[0] for p in enc.tables] == [min(2**10, (r + 1) ** 3) for r in enc.resolutions]


def test_hash_grid_gradcheck_inputs_and_table():
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=3, n_features=2, log2_table_size=8, base_resolution=3, finest_resolution=20).double()
    tables = [torch.randn_like(t).requires_grad_() for t in enc.tables]
    # keep points away from cell faces so finite differences stay inside one cell at every level
    x = (torch.rand(6, 3, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()

    def f(p, *t):
        return hash_grid_encode(p, t, enc.resolutions, enc.dense)

    assert enc.dense[0] and not enc.dense[-1]  # both paths (dense grid_sample, hashed gather) are checked
    assert torch.autograd.gradcheck(f, (x, *tables), eps=1e-7, atol=1e-5)


def test_hash_grid_sparse_grad_matches_dense_grad():
    # sparse_grad changes only the gradient's layout: same values, same (densified) gradients,
    # sparse COO for the hashed levels, dense for the dense ones
    torch.manual_seed(2)
    dense_enc = HashGridEncoding(n_levels=3, n_features=2, log2_table_size=8, base_resolution=3, finest_resolution=20).double()
    sparse_enc = HashGridEncoding(n_levels=3, n_features=2, log2_table_size=8, base_resolution=3, finest_resolution=20, sparse_grad=True).double()
    sparse_enc.load_state_dict(dense_enc.state_dict())
    x = torch.rand(30, 3, dtype=torch.float64)
    w = torch.randn(30, 6, dtype=torch.float64)
    a, b = dense_enc(x), sparse_enc(x)
    assert torch.equal(a, b)
    (a * w).sum().backward()
    (b * w).sum().backward()
    for is_dense, td, ts in zip(sparse_enc.dense, dense_enc.tables, sparse_enc.tables):
        assert ts.grad.is_sparse == (not is_dense)
        assert torch.allclose(ts.grad.to_dense(), td.grad, atol=1e-12)
    assert not all(sparse_enc.dense) and "sparse_grad=True" in repr(sparse_enc)


def test_fast_hash_path_matches_reference_indexing():
    from physinv.core.encoding import hash_grid_indices

    torch.manual_seed(1)
    enc = HashGridEncoding(n_levels=5, n_features=2, log2_table_size=10, base_resolution=4, finest_resolution=64).double()
    with torch.no_grad():
        for t in enc.tables:
            t.normal_()
    lay = hash_grid_levels(5, 10, 4, 64)
    table = torch.cat(list(enc.tables))
    x = torch.rand(40, 3, dtype=torch.float64)
    pos = x[:, None, :] * lay["resolution"].double()[None, :, None]
    base = torch.minimum(pos.floor().long(), (lay["resolution"] - 1)[:, None])
    frac = pos - base
    corners_off = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)])
    corners = base[:, :, None, :] + corners_off
    rows = hash_grid_indices(corners, lay["resolution"], lay["table_size"], lay["dense"]) + lay["offset"][:, None]
    w = torch.where(corners_off.bool(), frac[:, :, None, :], 1 - frac[:, :, None, :]).prod(-1)
    ref = (w[..., None] * table[rows]).sum(-2).flatten(1)
    assert torch.allclose(enc(x), ref, atol=1e-12)
    assert any(enc.dense) and not all(enc.dense)


def _real_sh_scipy(l, m, theta, phi):
    # complex harmonics with the Condon-Shortley phase; real combinations as instant-ngp / 3DGS
    if hasattr(special, "sph_harm_y"):
        Y = special.sph_harm_y(l, abs(m), theta, phi)
    else:  # SciPy < 1.15: sph_harm(m, n, azimuth, polar)
        Y = special.sph_harm(abs(m), l, phi, theta)
    if m > 0:
        return math.sqrt(2) * Y.real
    if m < 0:
        return math.sqrt(2) * Y.imag
    return Y.real


@pytest.mark.parametrize("l_max", [0, 1, 2, 3, 4])
def test_spherical_harmonics_match_scipy(l_max):
    rng = np.random.default_rng(0)
    d = rng.normal(size=(64, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    theta, phi = np.arccos(d[:, 2]), np.arctan2(d[:, 1], d[:, 0])
    ours = spherical_harmonics(torch.from_numpy(d), l_max).numpy()
    assert ours.shape == (64, (l_max + 1) ** 2)
    col = 0
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            np.testing.assert_allclose(ours[:, col], _real_sh_scipy(l, m, theta, phi), atol=1e-10, err_msg=f"l={l} m={m}")
            col += 1


def test_spherical_harmonics_rejects_l5():
    with pytest.raises(ValueError, match="l_max"):
        spherical_harmonics(torch.zeros(1, 3), 5)

