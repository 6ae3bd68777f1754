"""Grey P1 radiative transfer in 2D, solved by the presentation's splitting scheme.

Model (slides, "Le modèle P1"), unknowns on a Cartesian grid of square cells of side ``h``::

    ∂t E + c div F        = c σa (a T⁴ − E)      E: radiative energy      [g/cm/sh²]
    ∂t F + c κ ∇E         = −c σc F              F: radiative flux (2D)   [g/sh²]
    ρ Cv ∂t T             = c σa (E − a T⁴)      T: matter temperature    [keV]

``κ = 1`` is the slides' form (``closure="slides"``, the default); ``κ = 1/3`` is the physical P1
closure (``closure="p1"``): its waves travel at ``c/√3`` and its thick limit is the diffusion
equation with ``D = c/(3σ)`` instead of ``D = c/σ``.

One time step Δt (``p1_step``) is the Lie splitting of the slides:

* **step 1** (``step1_temperature``), per cell, F frozen: implicit Euler on (E, Θ = aT⁴),
  ``E* = (α Eⁿ + β γ Θⁿ)/(1 − β δ)``, ``Θ* = (γ Θⁿ + α δ Eⁿ)/(1 − β δ)``, with the fixed point on
  ``T_q`` through ``μ_q = 1/(T³ⁿ + Tⁿ T²_q + T_q T²ⁿ + T³_q)`` (so that ``a(T* − Tⁿ) = μ (Θ* − Θⁿ)``);
* **step 2** (``step2_transport``), no exchange: 2D finite volumes with the asymptotic-preserving
  (AP) interface factor ``M_jk = 2/(2 + Δx σ_jk)``, ``σ_jk`` the mean of the two cells' σc,
  the interface quantities ``(F_jk, n_jk)`` (flux of E) and ``E_jk n_jk`` (flux of F) of the
  slides, explicit transport and implicit damping ``−c σc F``.

Deviations from the transcribed slides, each decided by a test in ``tests/radiative/test_p1.py``:

1. Step 1, γ and δ: the slides write ``ρ Cv μ_q``; with ``Θ = aT⁴`` the matter equation reads
   ``(ρ Cv μ/a) (Θ* − Θⁿ)/Δt = c σa (E* − Θ*)``, so we use ``ρ Cv μ_q / a``. With the literal
   coefficient, E + ρCvT is not conserved (``test_zero_d_conserves_energy_and_matches_ode``).
   σa is evaluated at ``(ρ, Tⁿ)`` (frozen during the fixed point), the same σa in both equations,
   which is what makes E + ρCvT conserved to the fixed-point tolerance.
2. Step 2, damping: the slides' ``Σ_k M_jk σ_jk`` over the four faces damps F four times too
   strongly when σ is uniform (the scheme is then not even consistent with −cσF for M → 1).
   Each component of F is damped by the mean of ``M σ`` over its own two faces
   (x: left/right, y: down/up); then a linear E has the exact discrete steady flux −∇E/σ and the
   thick limit is D = c/σ for every σΔx (``test_thick_limit_is_asymptotic_preserving``).
3. Step 2 uses the intermediate state (E*, F* = Fⁿ) of step 1 in its interface values (the slides'
   superscript n inside step 2 is read as "the input of this sub-step"), which makes the scheme a
   plain Lie splitting.
4. ``closure="p1"`` (c/3): the transport is written for (E, G = F/√κ) at the true wave speed
   λ = c√κ = c/√3 with σ' = σc/√κ; the slides' scheme then applies unchanged to (E, G) with
   (λ, σ'), so ``M = 2/(2 + √3 Δx σc)`` and the thick limit is c/(3σ)
   (``test_fourier_mode_decay`` and ``test_thick_limit_is_asymptotic_preserving`` with κ = 1/3).
5. Time step: ``Δt = CFL · Δx / (2 λ)`` — the factor 2 is the 2D stability bound of the explicit
   Rusanov-type interface terms (four faces), so any ``0 < CFL ≤ 1`` is stable.
6. Boundaries: one ghost cell per side and field. ``neumann`` copies the boundary cell (this is
   also the "free outflow" of the slides), ``value`` imposes a ghost value, ``periodic`` wraps
   around (tests only need it), and ``ponctuel(lo, hi[, k])`` is the slides' time-varying source
   ``E* = a T0⁴ + A sin(2 k π t)`` imposed on the ghost cells whose centre coordinate along the
   edge lies in ``[lo, hi]`` (domain units; the rest of that edge is free outflow). The slides
   do not give k: the default ``k = 100`` makes one period over their ``t_f = 0.01`` sh.
   The ghost density is the boundary cell's, so ``σ_jk`` on a boundary face uses the ghost T.

Every function works on batches ``(B, Ny, Nx)`` on the caller's device and dtype (float64 on CPU
by default, float32 allowed on CUDA); everything is differentiable with respect to ρ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from physinv.errors import PhysinvError

# Slides, "Implémentation C++": units cm, sh (shake = 1e-8 s), keV, g.
C_LIGHT = 299.0  # speed of light [cm/sh]
A_RAD = 0.01372  # radiation constant [g/cm/sh²/keV⁴] (so that E = a T⁴)
CV = 0.14361  # heat capacity [Jerk/g/keV]

Opacity = Callable[[Tensor, Tensor], Tensor]  # (rho, T) -> sigma [1/cm]


def default_opacity(rho: Tensor, T: Tensor) -> Tensor:
    """σa = σc = ρ T [cm⁻¹] (slides' default)."""
    return rho * T


class P1State(NamedTuple):
    """Fields of a batch of simulations, each (B, Ny, Nx): E, F_x, F_y [radiation], T [keV]."""

    E: Tensor
    Fx: Tensor
    Fy: Tensor
    T: Tensor


@dataclass(frozen=True)
class BC:
    """Boundary condition of one field on one side.

    kind: ``neumann`` (ghost = boundary cell; the free outflow), ``value`` (ghost = ``value``),
    ``periodic`` (ghost = opposite boundary cell), ``ponctuel`` (E only: ghost =
    ``base + amplitude sin(2 k π t)`` where the ghost centre along the edge is in [lo, hi],
    neumann elsewhere).
    """

    kind: str = "neumann"
    value: float = 0.0
    lo: float = 0.0
    hi: float = 1.0
    k: float = 100.0
    amplitude: float = 5.0
    base: float | None = None  # a T0⁴ when None

    def __post_init__(self) -> None:
        if self.kind not in ("neumann", "value", "periodic", "ponctuel"):
            raise PhysinvError(f"boundary condition: unknown kind '{self.kind}' (neumann, value, periodic, ponctuel)")


SIDES = ("l", "r", "d", "u")  # left (x_min), right (x_max), down (y_min), up (y_max)
FIELDS = ("E", "F_x", "F_y", "T")


def default_bcs() -> dict[str, dict[str, BC]]:
    """Slides' configuration: ponctuel source on the left edge, F = 0 and T = T0 there; free outflow elsewhere."""
    bcs = {side: {f: BC() for f in FIELDS} for side in SIDES}
    bcs["l"] = {"E": BC("ponctuel"), "F_x": BC("value", 0.0), "F_y": BC("value", 0.0), "T": BC("value", 5.0)}
    return bcs


@dataclass
class P1Params:
    """Physical and numerical parameters of the solver (slides' defaults)."""

    c: float = C_LIGHT
    a: float = A_RAD
    Cv: float = CV
    closure: str = "slides"  # "slides": ∂tF + c∇E ; "p1": ∂tF + (c/3)∇E
    cfl: float = 0.5
    dt: float | None = None  # overrides the CFL time step when given
    x_min: float = 0.0
    x_max: float = 1.0
    y_min: float = 0.0
    precision: float = 1e-6  # relative tolerance of the step-1 fixed point on T
    fixed_point_iters: int | None = None  # fixed count (no host sync; GPU batches); None: to precision
    max_fixed_point_iters: int = 100
    asymptotic_preserving: bool = True  # False: M_jk = 1 (classical scheme, for comparison)
    literal_step1: bool = False  # True: the slides' transcribed ρCvμ in γ, δ (not conservative)
    T0: float = 5.0  # reference temperature of the ponctuel source base a T0⁴ [keV]
    sigma_a: Opacity = default_opacity
    sigma_c: Opacity = default_opacity
    bcs: dict[str, dict[str, BC]] = field(default_factory=default_bcs)

    def __post_init__(self) -> None:
        if self.closure not in ("slides", "p1"):
            raise PhysinvError(f"closure: must be 'slides' or 'p1', got '{self.closure}'")
        if not (0.0 < self.cfl <= 1.0):
            raise PhysinvError(f"CFL: must be in (0, 1] for stability, got {self.cfl:g}")
        if self.x_max <= self.x_min:
            raise PhysinvError(f"x_max: must be greater than x_min ({self.x_min:g}), got {self.x_max:g}")
        for name in ("c", "a", "Cv"):
            if not getattr(self, name) > 0:
                raise PhysinvError(f"{name}: must be > 0, got {getattr(self, name)}")

    @property
    def kappa(self) -> float:
        """Closure factor of ∇E: 1 (slides) or 1/3 (physical P1)."""
        return 1.0 if self.closure == "slides" else 1.0 / 3.0

    @property
    def wave_speed(self) -> float:
        """λ = c √κ [cm/sh]: the characteristic speed used for the interface upwinding."""
        return self.c * math.sqrt(self.kappa)

    def cell_size(self, nx: int) -> float:
        return (self.x_max - self.x_min) / nx

    def time_step(self, nx: int) -> float:
        """Δt = CFL Δx / (2 λ) [sh] unless ``dt`` is given."""
        if self.dt is not None:
            return self.dt
        return self.cfl * self.cell_size(nx) / (2.0 * self.wave_speed)


# ---------------------------------------------------------------------------------------------
# step 1: temperature / radiation exchange, per cell
# ---------------------------------------------------------------------------------------------


def step1_temperature(
    E: Tensor,
    T: Tensor,
    rho: Tensor,
    sigma_a: Tensor,
    dt: float,
    c: float,
    a: float,
    Cv: float,
    precision: float = 1e-6,
    fixed_point_iters: int | None = None,
    max_iters: int = 100,
    literal_slides: bool = False,
) -> tuple[Tensor, Tensor, int]:
    """Implicit Euler on ∂tE = cσa(Θ − E), ρCv ∂tT = cσa(E − Θ), Θ = aT⁴, in every cell.

    E, T, rho, sigma_a: (B, Ny, Nx) [radiation energy, keV, g/cm³, 1/cm]; σa frozen at Tⁿ.
    Returns (E*, T*, iterations). The fixed point runs ``fixed_point_iters`` times when given
    (no host synchronisation), else until ``max|T_{q+1} − T_q| ≤ precision · max|T_q|``.
    literal_slides: use the transcribed ``ρ Cv μ_q`` in γ, δ (not conservative; kept to show the slip).
    """
    T2 = T * T
    theta_n = a * T2 * T2
    T3 = T2 * T
    csa = c * sigma_a
    inv_dt = 1.0 / dt
    beta = csa / (inv_dt + csa)
    alpha = 1.0 - beta  # = 1/(Δt (1/Δt + cσa))
    tiny = torch.finfo(T.dtype).tiny
    # ρCvμ_q/(aΔt) = heat_rate · μ_q (the slides' literal ρCvμ_q misses the 1/a: deviation 1)
    heat_rate = rho * ((Cv if literal_slides else Cv / a) * inv_dt)
    Tq = T
    n_iter = fixed_point_iters if fixed_point_iters is not None else max_iters
    E_new, T_new = E, T
    it = 0
    for it in range(1, n_iter + 1):
        Tq2 = Tq * Tq
        inv_mu = T3 + T2 * Tq + T * Tq2 + Tq2 * Tq  # 1/μ_q = (Tq⁴ − Tⁿ⁴)/(Tq − Tⁿ)
        # δ = cσa/(ρCvμ_q/(aΔt) + cσa) (multiplied through by 1/μ_q), γ = 1 − δ;
        # where ρ = σa = 0 nothing is exchanged (δ = 0, γ = 1)
        csa_s = csa * inv_mu
        delta = csa_s / (heat_rate + csa_s).clamp_min(tiny)
        gamma = 1.0 - delta
        den = 1.0 - beta * delta
        E_new = (alpha * E + beta * gamma * theta_n) / den
        theta = (gamma * theta_n + alpha * delta * E) / den
        T_new = (theta.clamp_min(0.0) / a).sqrt().sqrt()
        if fixed_point_iters is None:
            change = (T_new - Tq).abs().max()
            scale = Tq.abs().max().clamp_min(1e-300)
            Tq = T_new
            if bool(change <= precision * scale):
                break
        else:
            Tq = T_new
    return E_new, T_new, it


# ---------------------------------------------------------------------------------------------
# step 2: transport, 2D finite volumes, asymptotic-preserving interface factor
# ---------------------------------------------------------------------------------------------


def _ghost(u: Tensor, bc: BC, side: str, t: float | Tensor, coords: Tensor, a: float, T0: float, scale: float = 1.0) -> Tensor:
    """Ghost values beyond ``side`` for field u (B, Ny, Nx): (B, Ny, 1) for l/r, (B, 1, Nx) for d/u.

    coords: the ghost centres' coordinates along the edge (Ny,) or (Nx,). ``scale`` multiplies
    imposed values (G = F/√κ in the transport variables).
    """
    inside = {"l": u[..., :, :1], "r": u[..., :, -1:], "d": u[..., :1, :], "u": u[..., -1:, :]}[side]
    if bc.kind == "neumann":
        return inside
    if bc.kind == "periodic":
        return {"l": u[..., :, -1:], "r": u[..., :, :1], "d": u[..., -1:, :], "u": u[..., :1, :]}[side]
    if bc.kind == "value":
        return torch.full_like(inside, bc.value * scale)
    # ponctuel: a T0⁴ + A sin(2kπt) on [lo, hi] along the edge, free outflow elsewhere
    base = a * T0**4 if bc.base is None else bc.base
    phase = 2.0 * bc.k * math.pi * t
    wave = torch.sin(phase) if isinstance(phase, Tensor) else math.sin(phase)  # a 0-d tensor t under torch.compile
    value = (base + bc.amplitude * wave) * scale
    on = (coords >= bc.lo) & (coords <= bc.hi)
    on = on.reshape(-1, 1) if side in ("l", "r") else on.reshape(1, -1)
    return torch.where(on, torch.as_tensor(value, dtype=inside.dtype, device=inside.device), inside)


def _extend(u: Tensor, bcs: dict[str, dict[str, BC]], name: str, axis: str, t: float | Tensor, ycs: Tensor, xcs: Tensor,
            a: float, T0: float, scale: float = 1.0) -> Tensor:
    """u (B, Ny, Nx) with its two ghost layers along ``axis``: (B, Ny, Nx+2) for x, (B, Ny+2, Nx) for y."""
    if axis == "x":
        lo = _ghost(u, bcs["l"][name], "l", t, ycs, a, T0, scale)
        hi = _ghost(u, bcs["r"][name], "r", t, ycs, a, T0, scale)
        return torch.cat([lo, u, hi], dim=-1)
    lo = _ghost(u, bcs["d"][name], "d", t, xcs, a, T0, scale)
    hi = _ghost(u, bcs["u"][name], "u", t, xcs, a, T0, scale)
    return torch.cat([lo, u, hi], dim=-2)


def interface_factor(sigma_face: Tensor, h: float, asymptotic_preserving: bool = True) -> Tensor:
    """M_jk = 2 / (2 + Δx σ_jk) (dimensionless); 1 for the classical, non-AP scheme."""
    if not asymptotic_preserving:
        return torch.ones_like(sigma_face)
    return 2.0 / (2.0 + h * sigma_face)


def step2_transport(
    E: Tensor,
    Gx: Tensor,
    Gy: Tensor,
    sigma_x: Tensor,
    sigma_y: Tensor,
    E_ext_x: Tensor,
    E_ext_y: Tensor,
    Gx_ext: Tensor,
    Gy_ext: Tensor,
    dt: float,
    h: float,
    speed: float,
    asymptotic_preserving: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One AP finite-volume step of ∂tE + λ div G = 0, ∂tG + λ∇E = −λσ G on square cells.

    E, Gx, Gy: (B, Ny, Nx); E_ext_x, Gx_ext: (B, Ny, Nx+2) with ghosts along x; E_ext_y, Gy_ext:
    (B, Ny+2, Nx) with ghosts along y; sigma_x: (B, Ny, Nx+1) face opacities σ_jk on x-faces,
    sigma_y: (B, Ny+1, Nx) on y-faces [1/cm]; λ = ``speed`` [cm/sh]; h = Δx = Δy [cm].

    Interface values for the face between j (low side) and k (high side), normal n = +axis:
    ``(F_jk,n) = M [(G_j·n + G_k·n)/2 − (E_k − E_j)/2]`` and
    ``E_jk = M [(E_j + E_k)/2 − (G_k·n − G_j·n)/2]``; the update is the slides' (α, β, γ, δ) form
    with the damping ``Σ_k M σ`` replaced by its mean over the two faces of each direction.
    """
    Mx = interface_factor(sigma_x, h, asymptotic_preserving)  # (B, Ny, Nx+1)
    My = interface_factor(sigma_y, h, asymptotic_preserving)  # (B, Ny+1, Nx)
    EL, ER = E_ext_x[..., :, :-1], E_ext_x[..., :, 1:]
    GL, GR = Gx_ext[..., :, :-1], Gx_ext[..., :, 1:]
    ED, EU = E_ext_y[..., :-1, :], E_ext_y[..., 1:, :]
    GD, GU = Gy_ext[..., :-1, :], Gy_ext[..., 1:, :]
    # (F_jk, n_jk) / l_jk and E_jk / l_jk on every face
    flux_x = Mx * (0.5 * (GL + GR) - 0.5 * (ER - EL))
    flux_y = My * (0.5 * (GD + GU) - 0.5 * (EU - ED))
    eface_x = Mx * (0.5 * (EL + ER) - 0.5 * (GR - GL))
    eface_y = My * (0.5 * (ED + EU) - 0.5 * (GU - GD))
    ratio = speed * dt / h  # λ Δt l_jk / |Ω_j| with l = h, |Ω| = h²
    E_new = E - ratio * (flux_x[..., :, 1:] - flux_x[..., :, :-1] + flux_y[..., 1:, :] - flux_y[..., :-1, :])
    # Σ_k E_jk n_jk − E_j Σ_k l M n_jk, per component (the consistent, well-balanced gradient)
    grad_x = (eface_x[..., :, 1:] - eface_x[..., :, :-1]) - E * (Mx[..., :, 1:] - Mx[..., :, :-1])
    grad_y = (eface_y[..., 1:, :] - eface_y[..., :-1, :]) - E * (My[..., 1:, :] - My[..., :-1, :])
    damp_x = 0.5 * (Mx[..., :, 1:] * sigma_x[..., :, 1:] + Mx[..., :, :-1] * sigma_x[..., :, :-1])
    damp_y = 0.5 * (My[..., 1:, :] * sigma_y[..., 1:, :] + My[..., :-1, :] * sigma_y[..., :-1, :])
    Gx_new = (Gx - ratio * grad_x) / (1.0 + speed * dt * damp_x)
    Gy_new = (Gy - ratio * grad_y) / (1.0 + speed * dt * damp_y)
    return E_new, Gx_new, Gy_new


# ---------------------------------------------------------------------------------------------
# one full step and time integration
# ---------------------------------------------------------------------------------------------


class Grid(NamedTuple):
    """Cell centres along each axis: xcs (Nx,), ycs (Ny,) [cm]; h [cm]."""

    xcs: Tensor
    ycs: Tensor
    h: float


def make_grid(params: P1Params, ny: int, nx: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> Grid:
    h = params.cell_size(nx)
    xcs = params.x_min + (torch.arange(nx, device=device, dtype=dtype) + 0.5) * h
    ycs = params.y_min + (torch.arange(ny, device=device, dtype=dtype) + 0.5) * h
    return Grid(xcs, ycs, h)


def p1_step(state: P1State, rho: Tensor, t: float | Tensor, dt: float, params: P1Params, grid: Grid) -> P1State:
    """Advance every simulation of the batch by one split step Δt (state fields (B, Ny, Nx)).

    t: time at the start of the step [sh], a float or a 0-d tensor (the latter under torch.compile,
    so that a new time does not trigger a recompilation).
    """
    c, a = params.c, params.a
    # step 1: exchange (σa frozen at Tⁿ)
    sa = params.sigma_a(rho, state.T)
    E1, T1, _ = step1_temperature(
        state.E, state.T, rho, sa, dt, c, a, params.Cv, params.precision, params.fixed_point_iters, params.max_fixed_point_iters,
        params.literal_step1,
    )
    # step 2: transport of (E, G = F/√κ) at λ = c√κ with σ' = σc/√κ (κ = 1: the slides' scheme)
    root_kappa = math.sqrt(params.kappa)
    bcs, T0 = params.bcs, params.T0
    Gx, Gy = state.Fx / root_kappa, state.Fy / root_kappa
    ex = lambda u, name, axis, scale=1.0: _extend(u, bcs, name, axis, t, grid.ycs, grid.xcs, a, T0, scale)  # noqa: E731
    T_x, T_y = ex(T1, "T", "x"), ex(T1, "T", "y")
    # ghost density = boundary cell's (wrapped around when periodic)
    rho_x = _wrap(rho, "x") if _periodic(bcs, "x") else torch.cat([rho[..., :, :1], rho, rho[..., :, -1:]], dim=-1)
    rho_y = _wrap(rho, "y") if _periodic(bcs, "y") else torch.cat([rho[..., :1, :], rho, rho[..., -1:, :]], dim=-2)
    sc_x = params.sigma_c(rho_x, T_x)
    sc_y = params.sigma_c(rho_y, T_y)
    sigma_x = 0.5 * (sc_x[..., :, :-1] + sc_x[..., :, 1:]) / root_kappa
    sigma_y = 0.5 * (sc_y[..., :-1, :] + sc_y[..., 1:, :]) / root_kappa
    E2, Gx2, Gy2 = step2_transport(
        E1, Gx, Gy, sigma_x, sigma_y,
        ex(E1, "E", "x"), ex(E1, "E", "y"), ex(Gx, "F_x", "x", 1 / root_kappa), ex(Gy, "F_y", "y", 1 / root_kappa),
        dt, grid.h, params.wave_speed, params.asymptotic_preserving,
    )
    return P1State(E2, Gx2 * root_kappa, Gy2 * root_kappa, T1)


_COMPILED: dict[tuple, Callable] = {}


def compiled_step(params: P1Params, grid: Grid, dt: float) -> Callable[[P1State, Tensor, Tensor], P1State]:
    """``torch.compile`` of one :func:`p1_step` for fixed (params, grid, Δt): the whole step fuses into
    a few loops (4-5× faster than eager on CPU). Needs ``params.fixed_point_iters`` (no host sync);
    the time is passed as a 0-d tensor. Compiled once per (params, grid, Δt, dtype, device)."""
    if params.fixed_point_iters is None:
        raise PhysinvError("compile: needs a fixed number of fixed-point iterations (fixed_point_iters)")
    key = (id(params), grid.xcs.shape[0], grid.ycs.shape[0], grid.xcs.dtype, str(grid.xcs.device), dt)
    if key not in _COMPILED:

        def one(E: Tensor, Fx: Tensor, Fy: Tensor, T: Tensor, rho: Tensor, t: Tensor) -> tuple[Tensor, ...]:
            return tuple(p1_step(P1State(E, Fx, Fy, T), rho, t, dt, params, grid))

        fn = torch.compile(one, dynamic=False)
        _COMPILED.clear()  # keep one entry: ids of dead params could be reused
        _COMPILED[key] = (fn, params)  # holding params keeps its id valid
    fn = _COMPILED[key][0]
    return lambda state, rho, t: P1State(*fn(*state, rho, t))


def _periodic(bcs: dict[str, dict[str, BC]], axis: str) -> bool:
    lo, hi = ("l", "r") if axis == "x" else ("d", "u")
    return bcs[lo]["E"].kind == "periodic" and bcs[hi]["E"].kind == "periodic"


def _wrap(u: Tensor, axis: str) -> Tensor:
    if axis == "x":
        return torch.cat([u[..., :, -1:], u, u[..., :, :1]], dim=-1)
    return torch.cat([u[..., -1:, :], u, u[..., :1, :]], dim=-2)


def uniform_state(shape: Sequence[int], E0: float, T0: float, device=None, dtype: torch.dtype = torch.float64) -> P1State:
    """E = E0, F = 0, T = T0 everywhere; shape (B, Ny, Nx)."""
    E = torch.full(tuple(shape), float(E0), device=device, dtype=dtype)
    z = torch.zeros_like(E)
    return P1State(E, z, z.clone(), torch.full_like(E, float(T0)))


@dataclass
class Trajectory:
    """Saved states: ``times`` (S,) [sh] and fields stacked as (S, B, Ny, Nx); ``boundary``: E on the
    four edges at every step (n_steps+1, B, 4, N) when requested (order l, r, d, u; needs Nx = Ny)."""

    times: list[float]
    E: Tensor
    Fx: Tensor
    Fy: Tensor
    T: Tensor
    steps: int
    dt: float
    boundary: Tensor | None = None
    boundary_times: list[float] | None = None


def _edges(E: Tensor) -> Tensor:
    """E on the four edges, (B, 4, N) in the order left, right, down, up (needs a square grid)."""
    return torch.stack([E[..., :, 0], E[..., :, -1], E[..., 0, :], E[..., -1, :]], dim=-2)


def simulate(
    rho: Tensor,
    params: P1Params,
    t_final: float,
    state0: P1State | None = None,
    E0: float | None = None,
    T0: float | None = None,
    t0: float = 0.0,
    save_times: Sequence[float] | None = None,
    boundary_every: int | None = None,
    checkpoint_every: int | None = None,
    compile: bool = False,
) -> Trajectory:
    """Integrate from ``t0`` to ``t_final`` [sh] for densities ``rho`` (B, Ny, Nx) [g/cm³].

    The initial state is ``state0`` or uniform (``E0`` default a T0⁴, ``T0`` default params.T0).
    save_times: times at which to keep the fields (each snapped to the first step at or after it;
    default: the final time only). boundary_every: also keep E on the four edges every that many
    steps. checkpoint_every: recompute the forward pass by chunks of that many steps during
    backward (``torch.utils.checkpoint``), so memory does not grow with the number of steps.
    compile: advance with :func:`compiled_step` (no-grad batch generation; needs fixed_point_iters).
    """
    if rho.ndim != 3:
        raise PhysinvError(f"rho: expected a (B, Ny, Nx) tensor, got shape {tuple(rho.shape)}")
    if t_final <= t0:
        raise PhysinvError(f"t_f: must be greater than t_0 ({t0:g}), got {t_final:g}")
    B, ny, nx = rho.shape
    grid = make_grid(params, ny, nx, rho.device, rho.dtype)
    dt = params.time_step(nx)
    n_steps = max(1, math.ceil((t_final - t0) / dt - 1e-9))
    dt = (t_final - t0) / n_steps  # land exactly on t_final
    if state0 is None:
        T0v = params.T0 if T0 is None else T0
        E0v = params.a * T0v**4 if E0 is None else E0
        state0 = uniform_state(rho.shape, E0v, T0v, rho.device, rho.dtype)
    save_steps = sorted({min(n_steps, max(0, math.ceil((s - t0) / dt - 1e-9))) for s in (save_times or [t_final])})
    saved: dict[int, P1State] = {}
    edges, edge_times = [], []
    state = state0
    if 0 in save_steps:
        saved[0] = state
    if boundary_every:
        edges.append(_edges(state.E))
        edge_times.append(t0)

    fast = compiled_step(params, grid, dt) if compile else None

    def advance(s: P1State, first: int, count: int) -> P1State:
        for i in range(first, first + count):
            if fast is not None:
                s = fast(s, rho, torch.tensor(t0 + i * dt, dtype=rho.dtype, device=rho.device))
            else:
                s = p1_step(s, rho, t0 + i * dt, dt, params, grid)
        return s

    step = 0
    while step < n_steps:
        # advance to the next step where something is recorded
        targets = [k for k in save_steps if k > step]
        nxt = targets[0] if targets else n_steps
        if boundary_every:
            nxt = min(nxt, (step // boundary_every + 1) * boundary_every)
        if checkpoint_every:
            nxt = min(nxt, step + checkpoint_every)
        count = nxt - step
        if checkpoint_every and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            flat = checkpoint(lambda *f, first=step, count=count: tuple(advance(P1State(*f), first, count)), *state, use_reentrant=False)
            state = P1State(*flat)
        else:
            state = advance(state, step, count)
        step = nxt
        if step in save_steps:
            saved[step] = state
        if boundary_every and step % boundary_every == 0:
            edges.append(_edges(state.E))
            edge_times.append(t0 + step * dt)
    keys = sorted(saved)
    stack = lambda name: torch.stack([getattr(saved[k], name) for k in keys])  # noqa: E731
    return Trajectory(
        times=[t0 + k * dt for k in keys],
        E=stack("E"), Fx=stack("Fx"), Fy=stack("Fy"), T=stack("T"),
        steps=n_steps, dt=dt,
        boundary=torch.stack(edges, dim=1) if edges else None,
        boundary_times=edge_times or None,
    )


def total_energy(state: P1State, rho: Tensor, Cv: float, h: float) -> Tensor:
    """∫ (E + ρ Cv T) dx dy per simulation, (B,)."""
    return ((state.E + rho * Cv * state.T) * h * h).sum(dim=(-2, -1))


def with_bcs(params: P1Params, **sides: dict[str, BC]) -> P1Params:
    """Copy of ``params`` with the given sides' conditions replaced (``l=..., r=..., d=..., u=...``)."""
    bcs = {s: dict(v) for s, v in params.bcs.items()}
    for side, fields in sides.items():
        bcs[side].update(fields)
    return replace(params, bcs=bcs)


def all_sides(kind: str) -> dict[str, dict[str, BC]]:
    """The same condition kind for every field on every side (``neumann`` or ``periodic``)."""
    return {side: {f: BC(kind) for f in FIELDS} for side in SIDES}
