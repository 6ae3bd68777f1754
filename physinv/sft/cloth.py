"""Differentiable cloth simulation: ArcSim's data-driven material and linearised implicit Euler.

Model (φ-SfT Sec. 3.1, following ArcSim, Narain et al. 2012, with the data-driven material of
Wang et al. 2011). Units: metres, seconds, kilograms. A cloth is a triangle mesh whose *rest state*
is the template (frame 0): each face keeps its rest edge matrix ``Dm`` (2×2, in a material frame
whose first axis is the texture's u direction = the fabric's warp) and rest area ``A``; each
interior edge keeps its rest length ``l`` and rest dihedral angle ``θ̄``.

* Stretching (per face): F = [x1−x0, x2−x0] Dm⁻¹ (3×2), G = (FᵀF − I)/2 (Green strain),
  ``E = A/2 (k0 G00² + k2 G11² + 2 k1 G00 G11 + k3 G01²)`` with (k0..k3) read from the 6×4
  stretching table: row 0 at zero strain, rows 1–5 along principal directions 0°, 22.5°, 45°,
  67.5°, 90°, linearly interpolated in the angle of the largest principal stretch and in its
  strain ``6 (√λmax − 1)`` clamped to [0, 1] (ArcSim's ``evaluate_stretching_sample``).
* Bending (per interior edge): ``E = k_b l² (θ − θ̄)² / (8 (A0 + A1))`` (ArcSim:
  ``shape = l²/(2a)``, ``E = ke·shape·(θ−θ̄)²/4``) with k_b read from the 3×5 bending table:
  rows at edge directions 0°, 45°, 90° from the warp, columns at ``0.1·|θ| l/(A0+A1)`` = 0..4.
* Mass: density [kg/m²] × rest area, a third of each face to each of its vertices; gravity
  ``(0, 0, −9.8) m/s²`` (z is up).
* Wind (ArcSim ``wind_force``): per face ``ρ_air A |v_n| v_n n`` with ``v_n = n·(w − v̄_face)``,
  ρ_air = 1 kg/m³, spread equally on the three vertices; the wind velocity w [m/s] is a parameter.
* Corrective forces (φ-SfT Sec. 4): ``v_t ← v_t + F_t`` per vertex at the start of frame t.
* Time step (ArcSim ``implicit_update``): ``(M − h ∂f/∂v − h² ∂f/∂x) Δv = h (f + h ∂f/∂x v)``,
  ``v ← v + Δv``, ``x ← x + h v``; wind is explicit (∂f/∂v = 0). ``h = 1/(fps · substeps)``.

Deviations from ArcSim / the paper, each decided by a test in ``tests/sft/test_cloth.py``:

1. Stretching direction lookup: ArcSim takes ``|atan2(q1, q0)|`` of the eigenvector ``q``, whose sign
   is arbitrary, so the same strain could read the 22.5° or the 90° row. We fold the direction into
   [0°, 90°] (orthotropic symmetry), making the lookup a function of the strain only
   (``test_stretching_lookup_is_symmetric``). The table is evaluated at G directly, not through
   ArcSim's 30³ pre-sampled grid (same values at the grid nodes, no interpolation error).
2. Bending curvature: ArcSim indexes the table with the signed ``θ l/(A0+A1)``, so an upward fold
   extrapolates below column 0; we use ``|θ|`` (folds up and down are equally stiff,
   ``test_bending_is_symmetric_in_fold_direction``).
3. The stretching Hessian (∂f/∂x) is the Gauss–Newton term plus the second-order term
   ``Σ S_ab ∂²G_ab`` with the 2×2 stress ``S`` projected onto the positive semi-definite cone
   (ArcSim clamps the diagonal stresses at 0 only), so ``M − h²∂f/∂x`` is symmetric positive
   definite for every state and the sparse path can use conjugate gradients
   (``test_system_matrix_is_spd``). Bending uses ArcSim's Gauss–Newton ``−k·shape·dθ dθᵀ/2``.
   The stiffness lookups (k, k_b) are frozen inside the force derivatives, as ArcSim does; the
   forces themselves are exact derivatives of the energy at frozen k (``test_forces_are_energy_gradients``).
4. Handles/pins are hard constraints, not ArcSim's penalty springs: the rows and columns of the
   constrained vertices are replaced by the identity and their Δv is set so that they land on the
   scripted position at the end of the step (``test_handle_follows_script``).
5. Rest state: the template itself (per-face rest frames, rest dihedral angles), so a template
   that is not flat is at rest; ArcSim starts from a flat material space.
6. Gradients: autograd through a dense ``torch.linalg.solve`` (``solver="dense"``), or an adjoint
   sparse solve whose backward pass solves the same symmetric system: SciPy's sparse LU
   (``solver="sparse"``, CPU) or preconditioned conjugate gradients (``solver="cg"``, any device;
   slow for stiff fabrics), tested against the dense path (``test_sparse_solvers_match_dense``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from physinv.errors import PhysinvError

GRAVITY = (0.0, 0.0, -9.8)  # m/s², z up
AIR_DENSITY = 1.0  # kg/m³ (φ-SfT: fixed)

# The ten fabrics of Wang et al. 2011 as shipped with ArcSim (materials/*.json): density [kg/m²],
# stretching 6×4 [N/m], bending 3×5 [N·m] (×1e-6 in the files). The default material is their mean
# (φ-SfT: "average values of ten different real fabrics"); the per-fabric tables are not stored.
DEFAULT_DENSITY = 0.2188
DEFAULT_STRETCHING = (
    (456.9633, 13.9378, 574.4164, 45.2223),
    (493.8084, 39.8281, 713.1039, 6.3661),
    (488.6797, 65.7862, 663.2565, 9.5184),
    (521.7919, 55.6413, 673.4156, 63.6532),
    (523.0412, 73.8991, 707.0758, -8.5067),
    (530.4427, 49.1899, 733.9410, 40.1082),
)
DEFAULT_BENDING = (
    (59.8169e-6, 71.5172e-6, 94.0173e-6, 88.5969e-6, 69.6284e-6),
    (51.8158e-6, 42.8562e-6, 52.6339e-6, 51.3700e-6, 38.7500e-6),
    (51.4077e-6, 54.8765e-6, 60.2588e-6, 60.7253e-6, 48.8999e-6),
)


@dataclass
class Material:
    """Cloth material: density [kg/m²] (0-d), stretching (6, 4) [N/m], bending (3, 5) [N·m]."""

    density: Tensor
    stretching: Tensor
    bending: Tensor

    def to(self, **kw) -> "Material":
        return Material(self.density.to(**kw), self.stretching.to(**kw), self.bending.to(**kw))


def default_material(dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Material:
    """The mean of the ten Wang et al. fabrics (φ-SfT's initialisation)."""
    t = lambda v: torch.tensor(v, dtype=dtype, device=device)  # noqa: E731
    return Material(t(DEFAULT_DENSITY), t(DEFAULT_STRETCHING), t(DEFAULT_BENDING))


class ClothModel(NamedTuple):
    """Topology and rest state of a cloth mesh (all tensors on one device).

    faces (F, 3) long; dm_inv (F, 2, 2) inverse rest edge matrices in the warp-aligned material frame;
    area (F,) rest areas [m²]; edges (E, 4) long: interior edges as (x0, x1, x2, x3) with x0→x1 the
    shared edge as oriented in face ``edge_faces[:, 0]`` (opposite vertex x2) and x3 opposite in the
    other face; edge_faces (E, 2); edge_len (E,) rest lengths; rest_theta (E,) rest dihedral angles;
    edge_dir (E,) angle [rad] of each edge in texture space (warp = 0) for the bending lookup.
    """

    faces: Tensor
    dm_inv: Tensor
    area: Tensor
    edges: Tensor
    edge_faces: Tensor
    edge_len: Tensor
    rest_theta: Tensor
    edge_dir: Tensor
    num_vertices: int


def build_cloth(vertices: Tensor, faces: Tensor, uvs: Tensor | None = None) -> ClothModel:
    """Rest state from a template: vertices (V, 3) [m], faces (F, 3), optional per-vertex uvs (V, 2).

    The warp (material axis 0) of each face is the direction in which u grows (the first edge when
    there are no UVs). Raises ``PhysinvError`` for degenerate faces or edges shared by > 2 faces.
    """
    faces = faces.long()
    x = vertices
    tri = x[faces]  # (F, 3, 3)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    normal = torch.linalg.cross(e1, e2, dim=-1)
    double_area = normal.norm(dim=-1)
    if bool((double_area <= 1e-14).any()):
        raise PhysinvError(f"cloth: {int((double_area <= 1e-14).sum())} degenerate (zero-area) faces in the template")
    n = normal / double_area[:, None]
    warp = e1
    if uvs is not None:
        uv = uvs.to(x.dtype)[faces]
        du1, du2 = uv[:, 1, 0] - uv[:, 0, 0], uv[:, 2, 0] - uv[:, 0, 0]
        dv1, dv2 = uv[:, 1, 1] - uv[:, 0, 1], uv[:, 2, 1] - uv[:, 0, 1]
        det = du1 * dv2 - du2 * dv1
        tangent = (e1 * dv2[:, None] - e2 * dv1[:, None]) / torch.where(det.abs() > 1e-12, det, torch.ones_like(det))[:, None]
        ok = (det.abs() > 1e-12) & (tangent.norm(dim=-1) > 1e-12)
        warp = torch.where(ok[:, None], tangent, e1)
    a0 = warp - (warp * n).sum(-1, keepdim=True) * n
    a0 = a0 / a0.norm(dim=-1, keepdim=True)
    a1 = torch.linalg.cross(n, a0, dim=-1)
    dm = torch.stack([torch.stack([(e1 * a0).sum(-1), (e2 * a0).sum(-1)], -1), torch.stack([(e1 * a1).sum(-1), (e2 * a1).sum(-1)], -1)], -2)
    dm_inv = torch.linalg.inv(dm)
    area = 0.5 * double_area

    edges, edge_faces = _interior_edges(faces)
    xe = x[edges]
    edge_len = (xe[:, 1] - xe[:, 0]).norm(dim=-1)
    rest_theta = dihedral_angle(x, edges)
    if uvs is not None and len(edges):
        d = uvs.to(x.dtype)[edges[:, 1]] - uvs.to(x.dtype)[edges[:, 0]]
        edge_dir = torch.atan2(d[:, 1], d[:, 0])
    else:
        edge_dir = torch.zeros(len(edges), dtype=x.dtype, device=x.device)
    return ClothModel(faces, dm_inv, area, edges, edge_faces, edge_len, rest_theta, edge_dir, int(x.shape[0]))


def _interior_edges(faces: Tensor) -> tuple[Tensor, Tensor]:
    """Edges shared by two faces -> (E, 4) (x0, x1, x2, x3) and (E, 2) face ids (see ``ClothModel``)."""
    f = faces.cpu().tolist()
    seen: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
    for fi, (a, b, c) in enumerate(f):
        for u, v, w in ((a, b, c), (b, c, a), (c, a, b)):
            seen.setdefault((min(u, v), max(u, v)), []).append((fi, u, v, w))
    rows, fids = [], []
    for key, uses in seen.items():
        if len(uses) > 2:
            raise PhysinvError(f"cloth: edge {key} is shared by {len(uses)} faces (non-manifold template)")
        if len(uses) == 2:
            (f0, u0, v0, w0), (f1, _, _, w1) = uses
            rows.append((u0, v0, w0, w1))
            fids.append((f0, f1))
    if not rows:
        return torch.zeros((0, 4), dtype=torch.long, device=faces.device), torch.zeros((0, 2), dtype=torch.long, device=faces.device)
    return torch.tensor(rows, dtype=torch.long, device=faces.device), torch.tensor(fids, dtype=torch.long, device=faces.device)


# ----------------------------------------------------------------------------------------------
# geometry


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def dihedral_angle(x: Tensor, edges: Tensor) -> Tensor:
    """Signed dihedral angle (E,) [rad] of each interior edge; 0 for a flat pair of faces."""
    x0, x1, x2, x3 = (x[edges[:, i]] for i in range(4))
    n0 = _unit(torch.linalg.cross(x1 - x0, x2 - x0, dim=-1))
    n1 = _unit(torch.linalg.cross(x0 - x1, x3 - x1, dim=-1))
    e = _unit(x1 - x0)
    return torch.atan2((torch.linalg.cross(n0, n1, dim=-1) * e).sum(-1), (n0 * n1).sum(-1))


def dihedral_gradient(x: Tensor, edges: Tensor) -> Tensor:
    """∂θ/∂(x0, x1, x2, x3) (E, 4, 3) of :func:`dihedral_angle` (Bridson et al. 2003's closed form)."""
    x0, x1, x2, x3 = (x[edges[:, i]] for i in range(4))
    e = x1 - x0
    elen2 = (e * e).sum(-1, keepdim=True).clamp_min(1e-30)
    n0 = _unit(torch.linalg.cross(x1 - x0, x2 - x0, dim=-1))
    n1 = _unit(torch.linalg.cross(x0 - x1, x3 - x1, dim=-1))
    t2 = ((x2 - x0) * e).sum(-1, keepdim=True) / elen2  # projection of x2 on the edge: x0 + t2 e
    t3 = ((x3 - x0) * e).sum(-1, keepdim=True) / elen2
    emin = 1e-3 * elen2.sqrt()
    h0 = (x2 - x0 - t2 * e).norm(dim=-1, keepdim=True).clamp_min(1e-30).maximum(emin)
    h1 = (x3 - x0 - t3 * e).norm(dim=-1, keepdim=True).clamp_min(1e-30).maximum(emin)
    g2, g3 = -n0 / h0, -n1 / h1
    g0 = -((1 - t2) * g2 + (1 - t3) * g3)
    g1 = -(t2 * g2 + t3 * g3)
    return torch.stack([g0, g1, g2, g3], 1)


def face_normals(x: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Unit normals (F, 3) and areas (F,) of the current triangles."""
    tri = x[faces]
    cr = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    return _unit(cr), 0.5 * cr.norm(dim=-1)


# ----------------------------------------------------------------------------------------------
# material lookups


def _lerp_index(value: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Continuous index in [0, n] -> (lower integer index in [0, n-1], fraction in [0, 1])."""
    value = value.clamp(0.0, float(n))
    lo = value.detach().floor().clamp(0, n - 1).long()
    return lo, value - lo.to(value.dtype)


def stretching_stiffness(G: Tensor, table: Tensor) -> Tensor:
    """(k0, k1, k2, k3) (F, 4) for Green strains G (F, 2, 2) from the 6×4 table (module docstring)."""
    C = 2.0 * G + torch.eye(2, dtype=G.dtype, device=G.device)
    c00, c11, c01 = C[:, 0, 0], C[:, 1, 1], C[:, 0, 1]
    half_diff = 0.5 * (c00 - c11)
    r2 = half_diff.square() + c01.square()
    degenerate = r2 < 1e-28
    r = torch.sqrt(torch.where(degenerate, torch.ones_like(r2), r2))
    r = torch.where(degenerate, torch.zeros_like(r), r)
    lam_max = 0.5 * (c00 + c11) + r
    # direction of the largest principal stretch, folded into [0, π/2] (deviation 1)
    psi = 0.5 * torch.atan2(torch.where(degenerate, torch.zeros_like(c01), c01), torch.where(degenerate, torch.ones_like(half_diff), half_diff))
    angle_idx, angle_w = _lerp_index(psi.abs() * (8.0 / math.pi), 4)
    strain = (torch.sqrt(lam_max.clamp_min(1e-12)) - 1.0) * 6.0
    s = strain.clamp(0.0, 1.0)[:, None]
    aw = angle_w[:, None]
    rows = table[1:]  # (5, 4) directional rows
    directional = rows[angle_idx] * (1 - aw) + rows[angle_idx + 1] * aw
    k = table[0][None] * (1 - s) + directional * s
    return k.clamp_min(0.0)


def bending_stiffness(theta: Tensor, model: ClothModel, table: Tensor) -> Tensor:
    """k_b (E,) from the 3×5 bending table at the current angles θ (E,) (module docstring)."""
    a = model.area[model.edge_faces].sum(-1)
    curv = theta.abs() * model.edge_len / a  # deviation 2: |θ|
    curv_idx, curv_w = _lerp_index(0.1 * curv, 4)
    bias = model.edge_dir.abs() * (4.0 / math.pi)
    bias = torch.where(bias > 4, 8 - bias, bias)
    bias = torch.where(bias > 2, 4 - bias, bias)
    bias_idx, bias_w = _lerp_index(bias, 2)
    t = table
    k = (t[bias_idx, curv_idx] * (1 - bias_w) * (1 - curv_w) + t[bias_idx + 1, curv_idx] * bias_w * (1 - curv_w)
         + t[bias_idx, curv_idx + 1] * (1 - bias_w) * curv_w + t[bias_idx + 1, curv_idx + 1] * bias_w * curv_w)
    return k.clamp_min(0.0)


# ----------------------------------------------------------------------------------------------
# energies, forces, stiffness blocks


def _strain_terms(x: Tensor, model: ClothModel) -> tuple[Tensor, Tensor, Tensor]:
    """Per face: coefficients c (F, 3, 2) with F = Σ_i x_i c_i, deformation gradient (F, 3, 2), G (F, 2, 2)."""
    D = model.dm_inv
    c = torch.stack([-(D[:, 0] + D[:, 1]), D[:, 0], D[:, 1]], 1)  # (F, 3, 2)
    Fd = torch.einsum("fid,fia->fda", x[model.faces], c)
    G = 0.5 * (Fd.transpose(1, 2) @ Fd - torch.eye(2, dtype=x.dtype, device=x.device))
    return c, Fd, G


def stretching_energy(x: Tensor, model: ClothModel, table: Tensor, k: Tensor | None = None) -> Tensor:
    """Total stretching energy [J] (0-d); ``k`` (F, 4) frozen stiffnesses, else looked up at x."""
    _, _, G = _strain_terms(x, model)
    k = stretching_stiffness(G, table) if k is None else k
    g00, g11, g01 = G[:, 0, 0], G[:, 1, 1], G[:, 0, 1]
    e = k[:, 0] * g00**2 + k[:, 2] * g11**2 + 2 * k[:, 1] * g00 * g11 + k[:, 3] * g01**2
    return (0.5 * model.area * e).sum()


def bending_energy(x: Tensor, model: ClothModel, table: Tensor, kb: Tensor | None = None) -> Tensor:
    """Total bending energy [J] (0-d); ``kb`` (E,) frozen stiffnesses, else looked up at x."""
    theta = dihedral_angle(x, model.edges)
    kb = bending_stiffness(theta, model, table) if kb is None else kb
    shape = model.edge_len.square() / (2 * model.area[model.edge_faces].sum(-1))
    return (kb * shape * (theta - model.rest_theta).square() / 4).sum()


def _psd2(S00: Tensor, S11: Tensor, S01: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Project symmetric 2×2 [[S00, S01], [S01, S11]] (batched) onto the PSD cone (deviation 3)."""
    half_diff = 0.5 * (S00 - S11)
    r2 = half_diff.square() + S01.square()
    r = torch.sqrt(torch.where(r2 > 1e-300, r2, torch.ones_like(r2)))
    r = torch.where(r2 > 1e-300, r, torch.zeros_like(r))
    mean = 0.5 * (S00 + S11)
    lp, lm = mean + r, mean - r
    both_pos = lm >= 0
    both_neg = lp <= 0
    safe = torch.where(r > 0, 2 * r, torch.ones_like(r))
    # λ+ P+ with P+ = (S − λ− I)/(λ+ − λ−)
    q00, q11, q01 = lp * (S00 - lm) / safe, lp * (S11 - lm) / safe, lp * S01 / safe
    zero = torch.zeros_like(S00)
    out = []
    for full, part in ((S00, q00), (S11, q11), (S01, q01)):
        out.append(torch.where(both_pos, full, torch.where(both_neg, zero, part)))
    return out[0], out[1], out[2]


def internal_forces(x: Tensor, model: ClothModel, material: Material, with_jacobian: bool = True):
    """Stretching + bending forces (V, 3) [N] and, if asked, the stiffness K = −∂f/∂x as COO blocks.

    Returns ``(f, rows, cols, vals)`` with rows/cols (N,) flat DOF indices (3·vertex + axis) and
    vals (N,) entries of K (duplicates are summed); K is symmetric positive semi-definite.
    """
    c, Fd, G = _strain_terms(x, model)
    k = stretching_stiffness(G, material.stretching)
    A = model.area
    g00, g11, g01 = G[:, 0, 0], G[:, 1, 1], G[:, 0, 1]
    # ∂G_ab/∂x_i = (c_ia f_b + c_ib f_a)/2, shapes (F, 3, 3)
    f0, f1 = Fd[:, :, 0], Fd[:, :, 1]
    dG00 = c[:, :, 0:1] * f0[:, None, :]
    dG11 = c[:, :, 1:2] * f1[:, None, :]
    dG01 = 0.5 * (c[:, :, 0:1] * f1[:, None, :] + c[:, :, 1:2] * f0[:, None, :])
    S00 = A * (k[:, 0] * g00 + k[:, 1] * g11)
    S11 = A * (k[:, 2] * g11 + k[:, 1] * g00)
    S01 = A * k[:, 3] * g01
    grad_face = S00[:, None, None] * dG00 + S11[:, None, None] * dG11 + S01[:, None, None] * dG01  # (F, 3, 3)
    force = torch.zeros_like(x).index_add(0, model.faces.reshape(-1), -grad_face.reshape(-1, 3))

    E = model.edges.shape[0]
    if E:
        theta = dihedral_angle(x, model.edges)
        kb = bending_stiffness(theta, model, material.bending)
        shape = model.edge_len.square() / (2 * model.area[model.edge_faces].sum(-1))
        dtheta = dihedral_gradient(x, model.edges)  # (E, 4, 3)
        coef = kb * shape
        force = force.index_add(0, model.edges.reshape(-1), (-(coef * (theta - model.rest_theta) / 2)[:, None, None] * dtheta).reshape(-1, 3))
    if not with_jacobian:
        return force, None, None, None

    # stretching K blocks (F, 9, 9): Gauss–Newton + PSD-projected second-order term
    a = dG00.reshape(-1, 9)
    b = dG11.reshape(-1, 9)
    d = dG01.reshape(-1, 9)
    outer = lambda p, q: p[:, :, None] * q[:, None, :]  # noqa: E731
    K_face = A[:, None, None] * (
        k[:, 0, None, None] * outer(a, a) + k[:, 2, None, None] * outer(b, b)
        + k[:, 1, None, None] * (outer(a, b) + outer(b, a)) + k[:, 3, None, None] * outer(d, d)
    )
    P00, P11, P01 = _psd2(S00, S11, 0.5 * S01)  # Ŝ = [[S00, S01/2], [S01/2, S11]]
    # c_i · Ŝ c_j  (F, 3, 3) times I3
    Sc0 = P00[:, None] * c[:, :, 0] + P01[:, None] * c[:, :, 1]
    Sc1 = P01[:, None] * c[:, :, 0] + P11[:, None] * c[:, :, 1]
    cSc = c[:, :, 0][:, :, None] * Sc0[:, None, :] + c[:, :, 1][:, :, None] * Sc1[:, None, :]
    eye3 = torch.eye(3, dtype=x.dtype, device=x.device)
    K_face = K_face + (cSc[:, :, None, :, None] * eye3[None, None, :, None, :]).reshape(-1, 9, 9)
    dof_f = (3 * model.faces[:, :, None] + torch.arange(3, device=x.device)).reshape(-1, 9)
    rows = [dof_f[:, :, None].expand(-1, 9, 9).reshape(-1)]
    cols = [dof_f[:, None, :].expand(-1, 9, 9).reshape(-1)]
    vals = [K_face.reshape(-1)]
    if E:
        g = dtheta.reshape(-1, 12)
        K_edge = (coef / 2)[:, None, None] * outer(g, g)
        dof_e = (3 * model.edges[:, :, None] + torch.arange(3, device=x.device)).reshape(-1, 12)
        rows.append(dof_e[:, :, None].expand(-1, 12, 12).reshape(-1))
        cols.append(dof_e[:, None, :].expand(-1, 12, 12).reshape(-1))
        vals.append(K_edge.reshape(-1))
    return force, torch.cat(rows), torch.cat(cols), torch.cat(vals)


def vertex_masses(model: ClothModel, density: Tensor) -> Tensor:
    """(V,) lumped masses [kg]: a third of each adjacent face's density × rest area."""
    m_face = (density * model.area / 3.0)[:, None].expand(-1, 3).reshape(-1)
    return torch.zeros(model.num_vertices, dtype=model.area.dtype, device=model.area.device).index_add(0, model.faces.reshape(-1), m_face)


def wind_forces(x: Tensor, v: Tensor, model: ClothModel, wind: Tensor, air_density: float = AIR_DENSITY) -> Tensor:
    """(V, 3) [N]: per face ρ A |v_n| v_n n with v_n = n·(wind − mean face velocity), a third per vertex."""
    n, _ = face_normals(x, model.faces)
    vrel = wind - v[model.faces].mean(1)
    vn = (n * vrel).sum(-1)
    f_face = (air_density * model.area * vn.abs() * vn)[:, None] * n
    return torch.zeros_like(x).index_add(0, model.faces.reshape(-1), (f_face / 3.0)[:, None, :].expand(-1, 3, -1).reshape(-1, 3))


# ----------------------------------------------------------------------------------------------
# linear solves


def _matvec(rows: Tensor, cols: Tensor, vals: Tensor, diag: Tensor, p: Tensor) -> Tensor:
    return diag * p + torch.zeros_like(p).index_add(0, rows, vals * p[cols])


def _cg(rows, cols, vals, diag, b, tol: float, max_iter: int) -> Tensor:
    """Jacobi-preconditioned conjugate gradients for the SPD system (diag + COO) x = b (no autograd)."""
    dvals = torch.zeros_like(diag).index_add(0, rows[rows == cols], vals[rows == cols])
    inv_pre = 1.0 / (diag + dvals)
    x = torch.zeros_like(b)
    r = b.clone()
    z = inv_pre * r
    p = z.clone()
    rz = (r * z).sum()
    bnorm = b.norm().clamp_min(1e-300)
    for _ in range(max_iter):
        if float(r.norm()) <= tol * float(bnorm):
            break
        Ap = _matvec(rows, cols, vals, diag, p)
        alpha = rz / (p * Ap).sum()
        x = x + alpha * p
        r = r - alpha * Ap
        z = inv_pre * r
        rz_new = (r * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x


class _SparseSolve(torch.autograd.Function):
    """x = A⁻¹ b for symmetric A = diag(d) + COO(rows, cols, vals); adjoint backward (one more solve)."""

    @staticmethod
    def forward(ctx, vals, diag, b, rows, cols, tol, max_iter):
        x = _cg(rows, cols, vals.detach(), diag.detach(), b.detach(), tol, max_iter)
        ctx.save_for_backward(vals, diag, x, rows, cols)
        ctx.tol, ctx.max_iter = tol, max_iter
        return x

    @staticmethod
    def backward(ctx, grad_x):
        vals, diag, x, rows, cols = ctx.saved_tensors
        lam = _cg(rows, cols, vals.detach(), diag.detach(), grad_x, ctx.tol, ctx.max_iter)  # Aᵀ = A
        return -lam[rows] * x[cols], -lam * x, lam, None, None, None, None


class _ScipySolve(torch.autograd.Function):
    """x = A⁻¹ b by a sparse LU factorisation (SciPy SuperLU, on the CPU: the values are copied to
    host memory and the result back to the caller's device); the backward pass reuses the factors."""

    @staticmethod
    def forward(ctx, vals, diag, b, rows, cols):
        import scipy.sparse as sp
        from scipy.sparse.linalg import splu

        n = b.shape[0]
        r = torch.cat([rows, torch.arange(n, device=rows.device)]).cpu().numpy()
        c = torch.cat([cols, torch.arange(n, device=cols.device)]).cpu().numpy()
        v = torch.cat([vals.detach(), diag.detach()]).cpu().numpy()
        lu = splu(sp.csc_matrix((v, (r, c)), shape=(n, n)))
        x = torch.from_numpy(lu.solve(b.detach().cpu().numpy())).to(b)
        ctx.lu = lu
        ctx.save_for_backward(x, rows, cols)
        return x

    @staticmethod
    def backward(ctx, grad_x):
        x, rows, cols = ctx.saved_tensors
        lam = torch.from_numpy(ctx.lu.solve(grad_x.detach().cpu().numpy())).to(grad_x)  # Aᵀ = A
        return -lam[rows] * x[cols], -lam * x, lam, None, None


def solve_system(rows: Tensor, cols: Tensor, vals: Tensor, diag: Tensor, b: Tensor, solver: str = "dense", tol: float = 1e-10, max_iter: int = 2000) -> Tensor:
    """Solve (diag(d) + COO) x = b, differentiably; ``solver`` = "dense" (autograd through
    ``torch.linalg.solve``), "sparse" (SciPy sparse LU with an adjoint backward; CPU) or "cg"
    (adjoint Jacobi-preconditioned conjugate gradients, on any device)."""
    if solver == "sparse":
        return _ScipySolve.apply(vals, diag, b, rows, cols)
    if solver == "dense":
        A = torch.diag_embed(diag).index_put((rows, cols), vals, accumulate=True)
        return torch.linalg.solve(A, b)
    if solver == "cg":
        return _SparseSolve.apply(vals, diag, b, rows, cols, tol, max_iter)
    raise PhysinvError(f"cloth: unknown solver '{solver}' (dense, sparse, cg)")


# ----------------------------------------------------------------------------------------------
# time stepping


def implicit_step(
    x: Tensor,
    v: Tensor,
    model: ClothModel,
    material: Material,
    h: float,
    wind: Tensor | None = None,
    handle_idx: Tensor | None = None,
    handle_target: Tensor | None = None,
    gravity: Tensor | None = None,
    solver: str = "dense",
) -> tuple[Tensor, Tensor]:
    """One linearised implicit Euler step of length h [s]: (x, v) (V, 3) -> (x', v').

    handle_idx (H,) vertices whose position at the end of the step is ``handle_target`` (H, 3).
    """
    V = x.shape[0]
    mass = vertex_masses(model, material.density)
    g = torch.tensor(GRAVITY, dtype=x.dtype, device=x.device) if gravity is None else gravity
    f_int, rows, cols, kvals = internal_forces(x, model, material)
    f = f_int + mass[:, None] * g
    if wind is not None:
        f = f + wind_forces(x, v, model, wind)
    # (M + h² K) Δv = h (f − h K v)
    hK = (h * h) * kvals
    Kv = torch.zeros(3 * V, dtype=x.dtype, device=x.device).index_add(0, rows, kvals * v.reshape(-1)[cols])
    b = h * (f.reshape(-1) - h * Kv)
    diag = mass[:, None].expand(-1, 3).reshape(-1)
    if handle_idx is not None and handle_idx.numel():
        free = torch.ones(V, dtype=x.dtype, device=x.device)
        free[handle_idx] = 0.0
        free = free[:, None].expand(-1, 3).reshape(-1)
        dv_c = torch.zeros_like(x).index_put((handle_idx,), (handle_target - x[handle_idx]) / h - v[handle_idx]).reshape(-1)
        Adv_c = diag * dv_c + torch.zeros_like(dv_c).index_add(0, rows, hK * dv_c[cols])
        b = free * (b - Adv_c) + (1 - free) * dv_c
        hK = hK * free[rows] * free[cols]
        diag = diag * free + (1 - free)
    dv = solve_system(rows, cols, hK, diag, b, solver=solver).reshape(V, 3)
    v_new = v + dv
    return x + h * v_new, v_new


def simulate(
    model: ClothModel,
    material: Material,
    x0: Tensor,
    num_frames: int,
    frame_dt: float,
    substeps: int = 1,
    v0: Tensor | None = None,
    wind: Tensor | None = None,
    correctives: Tensor | None = None,
    handle_idx: Tensor | None = None,
    handle_path: Tensor | None = None,
    gravity: Tensor | None = None,
    solver: str = "dense",
) -> Tensor:
    """Positions of every frame (T, V, 3), frame 0 = x0.

    frame_dt: seconds between frames (1/fps); substeps per frame (h = frame_dt / substeps);
    correctives (T−1, V, 3) [m/s] added to the velocities at the start of frames 0..T−2 (φ-SfT);
    handle_path (T, H, 3) scripted positions of ``handle_idx`` per frame (linearly interpolated
    between frames; a constant path pins them); gravity (3,) [m/s²], default (0, 0, −9.8).
    """
    if substeps < 1:
        raise PhysinvError(f"cloth: substeps must be >= 1, got {substeps}")
    h = frame_dt / substeps
    x = x0
    v = torch.zeros_like(x0) if v0 is None else v0
    out = [x]
    for t in range(num_frames - 1):
        if correctives is not None:
            v = v + correctives[t]
        for s in range(substeps):
            target = None
            if handle_idx is not None:
                w = (s + 1) / substeps
                target = handle_path[t] * (1 - w) + handle_path[t + 1] * w
            x, v = implicit_step(x, v, model, material, h, wind=wind, handle_idx=handle_idx, handle_target=target, gravity=gravity, solver=solver)
        out.append(x)
    return torch.stack(out)


def grid_cloth(n: int, size: float, dtype: torch.dtype = torch.float64, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """A flat square cloth in the z = 0 plane centred at the origin: vertices (n², 3), faces, uvs (n², 2).

    Vertex (i, j) (row i along −y... +y, column j along +x) is ``i * n + j``; uv = (j, i)/(n−1);
    diagonals alternate so the mesh has no preferred shear direction.
    """
    if n < 2:
        raise PhysinvError(f"cloth: grid needs n >= 2, got {n}")
    lin = torch.linspace(-0.5 * size, 0.5 * size, n, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    verts = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.zeros(n * n, dtype=dtype, device=device)], -1)
    u = torch.linspace(0, 1, n, dtype=dtype, device=device)
    vv, uu = torch.meshgrid(u, u, indexing="ij")
    uvs = torch.stack([uu.reshape(-1), vv.reshape(-1)], -1)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            if (i + j) % 2 == 0:
                faces += [(a, b, d), (a, d, c)]
            else:
                faces += [(a, b, c), (b, d, c)]
    return verts, torch.tensor(faces, dtype=torch.long, device=device), uvs
