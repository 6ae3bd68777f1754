"""Input encodings for coordinate networks.

* :func:`positional_encoding` — NeRF's Fourier features
  ``gamma(p) = (p, sin(2^0 pi p), cos(2^0 pi p), ..., sin(2^(L-1) pi p), cos(2^(L-1) pi p))``
  applied to each coordinate (inputs expected in [-1, 1], as in the paper).
* :class:`HashGridEncoding` — instant-ngp's multi-resolution hash encoding (Müller et al. 2022),
  in pure PyTorch (the reference and the CUDA path; on the CPU a fused compiled kernel,
  :mod:`physinv.core.hashgrid_cpu`, computes the same by default, ``backend="auto"``): ``L`` levels of resolution ``N_l = floor(N_min * b^l)``,
  ``b = exp((ln N_max - ln N_min) / (L - 1))``; a level whose ``(N_l + 1)^3`` vertices fit in the
  table of ``T = 2^log2_table_size`` rows is indexed densely (one-to-one), the finer ones through
  the spatial hash ``(x * 1) xor (y * 2654435761) xor (z * 805459861) mod T``; features of the 8
  cell corners are blended trilinearly; the table is initialised U(-1e-4, 1e-4).
* :func:`spherical_harmonics` — real spherical harmonics of a unit direction up to band
  ``l_max <= 4``, i.e. ``(l_max + 1)^2`` coefficients (1, 4, 9, 16, 25). instant-ngp's
  "SphericalHarmonics degree 4" is ``l_max = 3`` (16 coefficients); physinv names the band
  explicitly to avoid that ambiguity. The sign convention is that of instant-ngp / tiny-cuda-nn and
  3D Gaussian splatting: for ``m > 0`` ``sqrt(2) Re Y_l^m``, for ``m < 0`` ``sqrt(2) Im Y_l^|m|``
  of the complex harmonics with the Condon–Shortley phase (``scipy.special.sph_harm_y``),
  ordered ``m = -l .. l`` within each band.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------
# Fourier features


def positional_encoding(x: Tensor, n_freqs: int, include_input: bool = True) -> Tensor:
    """NeRF positional encoding. x: (..., D) -> (..., D * (2 n_freqs + include_input)).

    Order: ``[x, sin(2^0 pi x), cos(2^0 pi x), sin(2^1 pi x), cos(2^1 pi x), ...]``, each block D wide.
    """
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi  # (F,)
    angles = x.unsqueeze(-2) * freqs.unsqueeze(-1)  # (..., F, D)
    feats = torch.stack([torch.sin(angles), torch.cos(angles)], -2)  # (..., F, 2, D)
    feats = feats.flatten(-3)
    return torch.cat([x, feats], -1) if include_input else feats


class FourierEncoding(nn.Module):
    """Module form of :func:`positional_encoding`; ``out_dim`` is the encoded width."""

    def __init__(self, in_dim: int, n_freqs: int, include_input: bool = True):
        super().__init__()
        self.in_dim, self.n_freqs, self.include_input = in_dim, n_freqs, include_input
        self.out_dim = in_dim * (2 * n_freqs + int(include_input))

    def forward(self, x: Tensor) -> Tensor:
        return positional_encoding(x, self.n_freqs, self.include_input)


# ----------------------------------------------------------------------------------------------
# multi-resolution hash grid

HASH_PRIMES = (1, 2654435761, 805459861)


def hash_grid_levels(n_levels: int, log2_table_size: int, base_resolution: int, finest_resolution: int) -> dict[str, Tensor]:
    """Static per-level layout of a hash grid.

    Returns ``resolution`` (L,) int64 ``N_l``, ``table_size`` (L,) rows per level (``(N_l+1)^3`` when
    dense, else ``T``), ``offset`` (L,) first row of each level in the concatenated table, ``dense``
    (L,) bool, and ``growth`` (0-d) the factor ``b``.
    """
    T = 2**log2_table_size
    b = math.exp((math.log(finest_resolution) - math.log(base_resolution)) / max(n_levels - 1, 1))
    res = [int(math.floor(base_resolution * b**lvl + 1e-9)) for lvl in range(n_levels)]
    dense = [(r + 1) ** 3 <= T for r in res]
    sizes = [(r + 1) ** 3 if d else T for r, d in zip(res, dense)]
    offsets = [0]
    for s in sizes[:-1]:
        offsets.append(offsets[-1] + s)
    return {
        "resolution": torch.tensor(res, dtype=torch.long),
        "table_size": torch.tensor(sizes, dtype=torch.long),
        "offset": torch.tensor(offsets, dtype=torch.long),
        "dense": torch.tensor(dense),
        "growth": torch.tensor(b, dtype=torch.float64),
    }


def hash_grid_indices(corners: Tensor, resolution: Tensor, table_size: Tensor, dense: Tensor) -> Tensor:
    """Integer vertex coordinates (..., L, 8, 3) -> row within each level's table (..., L, 8).

    The reference form of the indexing (the fast path in :func:`hash_grid_encode` computes the
    same rows axis by axis).
    """
    stride = (resolution + 1).view(-1, 1)  # (L, 1)
    dense_idx = corners[..., 0] + corners[..., 1] * stride + corners[..., 2] * stride * stride
    hashed = (corners[..., 0] * HASH_PRIMES[0]) ^ (corners[..., 1] * HASH_PRIMES[1]) ^ (corners[..., 2] * HASH_PRIMES[2])
    hashed = hashed % table_size.view(-1, 1)
    return torch.where(dense.view(-1, 1), dense_idx, hashed)


def _outer3(a: Tensor, b: Tensor, c: Tensor, op) -> Tensor:
    """(..., 2) x 3 -> (..., 8): ``op`` combined over the 8 corners, corner index = 4 i + 2 j + k."""
    return op(op(a[..., :, None, None], b[..., None, :, None]), c[..., None, None, :]).flatten(-3)


def _dense_level(x: Tensor, table: Tensor, resolution: int) -> Tensor:
    """Trilinear lookup in a dense level: the table (rows i + j s + k s^2, s = N + 1) is a voxel grid,
    so ``grid_sample`` (fused, differentiable w.r.t. grid and points) does the work. x (N, 3) in [0, 1]."""
    s = resolution + 1
    volume = table.view(s, s, s, table.shape[-1]).permute(3, 0, 1, 2).unsqueeze(0)  # (1, F, k, j, i)
    grid = (x * 2.0 - 1.0).view(1, -1, 1, 1, 3)  # grid_sample reads (x, y, z) -> (i, j, k)
    out = torch.nn.functional.grid_sample(volume, grid.to(table.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(table.shape[-1], -1).t()


def _hashed_level(x: Tensor, table: Tensor, resolution: int, sparse_grad: bool = False) -> Tensor:
    """Trilinear blend of the 8 hashed corner features of one level: x (N, 3) in [0, 1] -> (N, F).

    ``sparse_grad``: gather the rows with ``embedding(..., sparse=True)``, whose backward gives the
    table a sparse COO gradient (only the <= 8 N touched rows) instead of a dense (T, F) one."""
    pos = x * resolution
    # the cell's lower corner; at x = 1 stay in the last cell with fraction 1
    base = pos.detach().floor().clamp(max=resolution - 1).long()
    frac = pos - base.to(x.dtype)
    w_axis = torch.stack([1.0 - frac, frac], -1)  # (N, 3, 2) lower / upper corner weight per axis
    weights = _outer3(w_axis[:, 0], w_axis[:, 1], w_axis[:, 2], torch.mul)  # (N, 8)
    corner = torch.stack([base, base + 1], -1)  # (N, 3, 2)
    mask = table.shape[0] - 1  # T is a power of two: mod T == & (T - 1), and (a^b^c)&m == (a&m)^(b&m)^(c&m)
    terms = [(corner[:, k] * HASH_PRIMES[k]) & mask for k in range(3)]
    rows = _outer3(terms[0], terms[1], terms[2], torch.bitwise_xor)  # (N, 8)
    if sparse_grad:
        feats = torch.nn.functional.embedding(rows, table, sparse=True)  # (N, 8, F)
    else:
        feats = table.index_select(0, rows.reshape(-1)).view(-1, 8, table.shape[-1])
    return (weights.to(feats.dtype).unsqueeze(-1) * feats).sum(1)


HASH_GRID_BACKENDS = ("auto", "torch", "fused")


def hash_grid_backend(x: Tensor, tables: Sequence[Tensor], dense: Sequence[bool], sparse_grad: bool = False, backend: str = "auto") -> str:
    """The implementation :func:`hash_grid_encode` uses: ``"torch"`` (the pure-PyTorch reference) or
    ``"fused"`` (:mod:`physinv.core.hashgrid_cpu`, one compiled CPU kernel).

    ``"auto"``: fused when the kernel is built and can take the inputs (CPU, float32, dense gradients,
    i.e. ``sparse_grad`` False), the reference otherwise (CUDA, float64, sparse gradients, no build).
    ``"fused"``: the kernel or a ValueError saying why not. ``"torch"``: always the reference."""
    if backend not in HASH_GRID_BACKENDS:
        raise ValueError(f"hash grid: backend must be one of {', '.join(HASH_GRID_BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    from physinv.core import hashgrid_cpu

    reason = "the fused hash-grid kernel gives dense table gradients; sparse_grad=True needs backend='torch' (or 'auto')" if sparse_grad else hashgrid_cpu.fused_unsupported(x, tables, dense)
    if reason is None:
        return "fused"
    if backend == "fused":
        raise ValueError(f"hash grid: backend='fused' unavailable: {reason}")
    return "torch"


def hash_grid_encode(x: Tensor, tables: Sequence[Tensor], resolutions: Sequence[int], dense: Sequence[bool], sparse_grad: bool = False, backend: str = "auto") -> Tensor:
    """Multi-resolution hash encoding.

    x: (N, 3) positions in [0, 1]^3 (clamped); tables: one (rows_l, F) feature table per level
    (``(N_l + 1)^3`` rows when dense, else a power of two T); resolutions N_l and dense flags from
    :func:`hash_grid_levels`. Returns (N, L * F), level-major. Differentiable w.r.t. ``x``
    (piecewise linear) and the tables. ``sparse_grad``: the hashed levels' tables receive sparse
    COO gradients (for a lazy optimiser such as :class:`physinv.nerf.optim.InstantNGPAdam` or
    ``torch.optim.SparseAdam``); the dense levels keep dense gradients.

    Speed (pure PyTorch on CPU is memory bound): the levels are looked up one at a time, so each
    level's gathers and scatters stay inside its own few-MB table (cache friendly) instead of one
    table of all levels; dense levels use ``grid_sample``; the 8 corner indices and weights are built
    per axis and combined by broadcasting.

    ``backend`` (see :func:`hash_grid_backend`): ``"auto"`` (default) runs the fused CPU kernel of
    :mod:`physinv.core.hashgrid_cpu` when it is built and the inputs are float32 CPU tensors with dense
    gradients, this reference otherwise; ``"torch"`` forces the reference, ``"fused"`` the kernel.
    Both give the same values and gradients (float32 rounding aside) and the same x-gradient
    conventions at the box faces, to second order (``create_graph``: a loss on the x-gradient).
    """
    if hash_grid_backend(x, tables, dense, sparse_grad, backend) == "fused":
        from physinv.core.hashgrid_cpu import fused_hash_grid_encode

        return fused_hash_grid_encode(x, tables, resolutions, dense)
    x = x.clamp(0.0, 1.0)
    outs = []
    for table, res, is_dense in zip(tables, resolutions, dense):
        outs.append(_dense_level(x, table, int(res)) if is_dense else _hashed_level(x, table, int(res), sparse_grad))
    return torch.cat(outs, -1)


class HashGridEncoding(nn.Module):
    """instant-ngp hash encoding of points in [0, 1]^3 (map your scene box there first).

    n_levels L (16), n_features F per level (2), log2_table_size (19: T = 2^19 rows per level),
    base_resolution N_min (16), finest_resolution N_max (2048 in the paper for large scenes; a
    64-pixel scene needs far less). ``out_dim = L * F``. One parameter table per level
    (``tables[l]``: (min(T, (N_l+1)^3), F)).

    ``sparse_grad`` (default False): the hashed levels' tables get sparse gradients (rows touched by
    the batch only), so that an optimiser can skip the untouched rows as instant-ngp does; the
    dense levels' tables keep dense gradients. Values and gradients are the same either way.

    ``backend`` ("auto", "torch" or "fused"): the implementation, see :func:`hash_grid_encode`.
    """

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_table_size: int = 19, base_resolution: int = 16, finest_resolution: int = 2048, init_scale: float = 1e-4, sparse_grad: bool = False, backend: str = "auto"):
        super().__init__()
        if backend not in HASH_GRID_BACKENDS:
            raise ValueError(f"HashGridEncoding: backend must be one of {', '.join(HASH_GRID_BACKENDS)}, got {backend!r}")
        self.sparse_grad, self.backend = sparse_grad, backend
        self.n_levels, self.n_features, self.log2_table_size = n_levels, n_features, log2_table_size
        self.base_resolution, self.finest_resolution = base_resolution, finest_resolution
        layout = hash_grid_levels(n_levels, log2_table_size, base_resolution, finest_resolution)
        self.resolutions = [int(r) for r in layout["resolution"]]
        self.dense = [bool(d) for d in layout["dense"]]
        self.growth = float(layout["growth"])
        self.tables = nn.ParameterList(
            [nn.Parameter(torch.empty(int(rows), n_features).uniform_(-init_scale, init_scale)) for rows in layout["table_size"]]
        )
        self.out_dim = n_levels * n_features

    def forward(self, x: Tensor) -> Tensor:
        return hash_grid_encode(x, list(self.tables), self.resolutions, self.dense, self.sparse_grad, self.backend)

    def extra_repr(self) -> str:
        return f"levels={self.n_levels}, features={self.n_features}, T=2^{self.log2_table_size}, N_min={self.base_resolution}, N_max={self.finest_resolution}, b={self.growth:.4f}, sparse_grad={self.sparse_grad}, backend={self.backend}"


# ----------------------------------------------------------------------------------------------
# real spherical harmonics

_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658, 1.445305721320277, -0.5900435899266435)
_C4 = (2.5033429417967046, -1.7701307697799304, 0.9461746957575601, -0.6690465435572892, 0.10578554691520431, -0.6690465435572892, 0.47308734787878004, -1.7701307697799304, 0.6258357354491761)


def spherical_harmonics(dirs: Tensor, l_max: int) -> Tensor:
    """Real SH basis of unit directions: dirs (..., 3) -> (..., (l_max + 1)^2), 0 <= l_max <= 4.

    Orthonormal on the sphere (``integral Y_i Y_j d omega = delta_ij``); convention in the module doc.
    """
    if not 0 <= l_max <= 4:
        raise ValueError(f"spherical_harmonics: l_max must be in 0..4, got {l_max}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if l_max >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if l_max >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [_C2[0] * xy, _C2[1] * yz, _C2[2] * (2 * zz - xx - yy), _C2[3] * xz, _C2[4] * (xx - yy)]
    if l_max >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * xy * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    if l_max >= 4:
        out += [
            _C4[0] * xy * (xx - yy),
            _C4[1] * yz * (3 * xx - yy),
            _C4[2] * xy * (7 * zz - 1),
            _C4[3] * yz * (7 * zz - 3),
            _C4[4] * (zz * (35 * zz - 30) + 3),
            _C4[5] * xz * (7 * zz - 3),
            _C4[6] * (xx - yy) * (7 * zz - 1),
            _C4[7] * xz * (xx - 3 * yy),
            _C4[8] * (xx * (xx - 3 * yy) - yy * (3 * xx - yy)),
        ]
    return torch.stack(out, -1)


class SHEncoding(nn.Module):
    """Module form of :func:`spherical_harmonics`; ``out_dim = (l_max + 1)^2``."""

    def __init__(self, l_max: int = 3):
        super().__init__()
        if not 0 <= l_max <= 4:
            raise ValueError(f"SHEncoding: l_max must be in 0..4, got {l_max}")
        self.l_max, self.out_dim = l_max, (l_max + 1) ** 2

    def forward(self, dirs: Tensor) -> Tensor:
        return spherical_harmonics(dirs, self.l_max)
