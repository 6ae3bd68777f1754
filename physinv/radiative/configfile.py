"""The presentation's key–value configuration format for one simulation, and its outputs.

One ``key value`` pair per line, ``#`` starts a comment (slides, "Exemple de fichier
configuration")::

    x_min 0            x_max 1            c 299      a 0.01372      C_v 0.14361
    CFL 0.5            precision 1e-6     t_0 0      t_f 0.01
    rho numpy.data/forwardPB/inputs/2743.npy          sigma_a rho*T        sigma_c rho*T
    E_0 0.01372*(5^4)  F_0_x 0  F_0_y 0  T_0 5
    E_u neumann ...    E_l ponctuel(0,1)  F_l_x 0  F_l_y 0  T_l 5 ...
    export_file data/df_simu.csv       export_mode dataframe       write_mode truncate

Numbers are expressions of the safe parser (:mod:`physinv.radiative.expr`): ``0.01372*(5^4)``.
``sigma_a``/``sigma_c`` are expressions of ``rho`` and ``T``; ``E_0``, ``F_0_x``, ``F_0_y``,
``T_0`` may use ``x`` and ``y`` (cell centres, cm). Boundary keys ``<field>_<side>`` (fields E,
F_x, F_y, T; sides u = up (y_max), d = down (y_min), l = left (x_min), r = right (x_max)) take
``neumann`` (= free outflow), ``periodic``, a constant expression, or for E ``ponctuel(lo, hi[, k])``:
the source ``a T_0⁴ + source_amplitude · sin(2 k π t)`` on the part of the edge whose coordinate
lies in [lo, hi] (our reading of ``ponctuel(0,1)``: the source's extent along the edge, so
``(0,1)`` on the unit square is the whole left edge).

``rho``: a ``.npy`` file of shape (Ny, Nx), non-negative (``numpy PATH``, ``numpy.PATH`` — the
slides' spelling — or ``PATH``; relative to the configuration file's folder, then to the current
folder), or an expression of ``x``, ``y`` on an ``n_x`` × ``n_y`` grid (default 64 × 64).
The cells are square: Δx = (x_max − x_min)/Nx and the domain height is Ny Δx.

Keys beyond the slides: ``closure`` (slides | p1), ``fixed_point_iters``, ``dt``, ``n_x``,
``n_y``, ``y_min``, ``n_export`` (saved times, default 11), ``source_amplitude`` (5),
``source_k`` (100). ``export_mode``: ``dataframe`` (CSV + ``.npz``) or ``npz``;
``write_mode``: ``truncate`` or ``append`` (CSV rows added without a header).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physinv.errors import input_error
from physinv.radiative.expr import Expression, ExpressionError, parse, parse_call
from physinv.radiative.p1 import BC, FIELDS, SIDES, P1Params, P1State, Trajectory, make_grid, simulate

FLOAT_KEYS = {
    "x_min": 0.0, "x_max": 1.0, "y_min": 0.0, "c": 299.0, "a": 0.01372, "C_v": 0.14361, "CFL": 0.5,
    "precision": 1e-6, "t_0": 0.0, "t_f": 0.01, "source_amplitude": 5.0, "source_k": 100.0,
}
INT_KEYS = {"n_x": 64, "n_y": None, "n_export": 11, "fixed_point_iters": None}
FIELD_KEYS = {"E_0": "0.01372*(5^4)", "F_0_x": "0", "F_0_y": "0", "T_0": "5"}
OPACITY_KEYS = {"sigma_a": "rho*T", "sigma_c": "rho*T"}
BC_KEYS = {f"{f}_{s}" if f == "E" or f == "T" else f"F_{s}_{f[-1]}": (f, s) for f in FIELDS for s in SIDES}
CHOICE_KEYS = {
    "export_mode": ("dataframe", "npz"),
    "write_mode": ("truncate", "append"),
    "closure": ("slides", "p1"),
}
OTHER_KEYS = {"rho", "export_file", "dt"}
KNOWN_KEYS = set(FLOAT_KEYS) | set(INT_KEYS) | set(FIELD_KEYS) | set(OPACITY_KEYS) | set(BC_KEYS) | set(CHOICE_KEYS) | OTHER_KEYS


@dataclass
class SimulationConfig:
    """Everything one ``physinv radiative simulate`` run needs."""

    params: P1Params
    rho: torch.Tensor  # (Ny, Nx) float64 [g/cm³]
    initial: dict[str, Expression]  # E_0, F_0_x, F_0_y, T_0
    t_0: float
    t_f: float
    n_export: int = 11
    export_file: Path | None = None
    export_mode: str = "dataframe"
    write_mode: str = "truncate"
    source: str = "config"
    raw: dict[str, str] = field(default_factory=dict)

    def initial_state(self, device=None, dtype: torch.dtype = torch.float64) -> P1State:
        """Fields (1, Ny, Nx) from the E_0, F_0_x, F_0_y, T_0 expressions (x, y = cell centres)."""
        ny, nx = self.rho.shape
        grid = make_grid(self.params, ny, nx, device, dtype)
        y, x = torch.meshgrid(grid.ycs, grid.xcs, indexing="ij")
        out = []
        for key in ("E_0", "F_0_x", "F_0_y", "T_0"):
            try:
                value = self.initial[key].evaluate(x=x, y=y)
            except ExpressionError as err:
                raise input_error(self.source, key, str(err)) from None
            value = torch.as_tensor(value, dtype=dtype, device=device).expand(ny, nx).clone()
            if key == "T_0" and not bool((value > 0).all()):
                raise input_error(self.source, key, "the temperature must be > 0 everywhere")
            if key == "E_0" and not bool((value >= 0).all()):
                raise input_error(self.source, key, "the radiative energy must be >= 0 everywhere")
            out.append(value[None])
        return P1State(*out)


def _strip(line: str) -> str:
    return line.split("#", 1)[0].strip()


def read_pairs(path: str | Path) -> list[tuple[int, str, str]]:
    """(line number, key, value) of every non-empty line; a key without a value is an error."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "configuration file not found")
    pairs = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = _strip(line)
        if not text:
            continue
        parts = text.split(None, 1)
        if len(parts) < 2:
            raise input_error(path, f"line {number}: {parts[0]}", "missing value")
        key, value = parts[0], parts[1].strip()
        if key in seen:
            raise input_error(path, f"line {number}: {key}", f"given twice (first on line {seen[key]})")
        seen[key] = number
        pairs.append((number, key, value))
    return pairs


def _number(source: Any, key: str, text: str) -> float:
    try:
        expr = parse(text)
        if not expr.is_constant:
            raise ExpressionError(f"'{text}' must be a constant (uses {', '.join(sorted(expr.variables))})")
        value = float(expr.evaluate())
    except ExpressionError as err:
        raise input_error(source, key, str(err)) from None
    if not math.isfinite(value):
        raise input_error(source, key, f"'{text}' is not a finite number")
    return value


def _load_density(source: Path, key: str, text: str) -> torch.Tensor:
    candidates = []
    if text.startswith("numpy "):
        candidates.append(text[6:].strip())
    else:
        candidates.append(text)
        if text.startswith("numpy."):
            candidates.append(text[6:])
    for cand in candidates:
        for base in (source.parent, Path.cwd()):
            path = Path(cand) if Path(cand).is_absolute() else base / cand
            if path.is_file():
                try:
                    arr = np.load(path, allow_pickle=False)
                except Exception as err:  # noqa: BLE001
                    raise input_error(source, key, f"cannot read '{cand}' as .npy ({type(err).__name__})") from None
                return check_density(torch.as_tensor(np.asarray(arr, dtype=np.float64)), source, key, cand)
    raise input_error(source, key, f"density file '{candidates[-1]}' not found (relative to {source.parent} or the current folder)")


def check_density(rho: torch.Tensor, source: Any, key: str = "rho", name: str = "") -> torch.Tensor:
    """A density map must be 2-D (Ny, Nx), finite and non-negative."""
    what = f"'{name}' " if name else ""
    if rho.ndim == 3 and rho.shape[0] == 1:
        rho = rho[0]
    if rho.ndim != 2 or min(rho.shape) < 1:
        raise input_error(source, key, f"density {what}must be a 2-D (Ny, Nx) array, got shape {tuple(rho.shape)}")
    if not bool(torch.isfinite(rho).all()):
        raise input_error(source, key, f"density {what}has non-finite values")
    if bool((rho < 0).any()):
        raise input_error(source, key, f"density {what}has negative values (min {rho.min().item():.4g}); a density must be >= 0")
    return rho


def _opacity(source: Any, key: str, text: str):
    try:
        expr = parse(text)
    except ExpressionError as err:
        raise input_error(source, key, str(err)) from None
    extra = sorted(expr.variables - {"rho", "T"})
    if extra:
        raise input_error(source, key, f"unknown name(s) {', '.join(extra)} in '{text}' (an opacity may use rho and T)")

    def sigma(rho: torch.Tensor, T: torch.Tensor, _expr=expr) -> torch.Tensor:
        value = _expr.evaluate(rho=rho, T=T)
        return value if isinstance(value, torch.Tensor) else torch.full_like(rho, float(value))

    sigma.__doc__ = f"{key} = {text}"
    return sigma


def _boundary(source: Any, key: str, fieldname: str, text: str, a: float, T0: float, amplitude: float, k: float) -> BC:
    word = text.strip().lower()
    if word in ("neumann", "periodic"):
        return BC(word)
    call = None
    try:
        call = parse_call(text)
    except ExpressionError as err:
        raise input_error(source, key, str(err)) from None
    if call is not None and call[0] == "ponctuel":
        if fieldname != "E":
            raise input_error(source, key, "ponctuel(...) is a source of E only")
        args = [_number(source, key, arg.text) for arg in call[1]]
        if len(args) not in (2, 3):
            raise input_error(source, key, f"ponctuel takes (lo, hi) or (lo, hi, k), got {len(args)} argument(s)")
        if args[1] < args[0]:
            raise input_error(source, key, f"ponctuel({args[0]:g}, {args[1]:g}): the extent must have lo <= hi")
        return BC("ponctuel", lo=args[0], hi=args[1], k=args[2] if len(args) == 3 else k, amplitude=amplitude, base=a * T0**4)
    return BC("value", value=_number(source, key, text))


def load_simulation_config(path: str | Path) -> SimulationConfig:
    """Parse and validate a configuration file; every problem is a one-line ``PhysinvError``."""
    path = Path(path)
    pairs = read_pairs(path)
    raw = {}
    for number, key, value in pairs:
        if key not in KNOWN_KEYS:
            raise input_error(path, f"line {number}: {key}", f"unknown key (known: {', '.join(sorted(KNOWN_KEYS))})")
        raw[key] = value
    floats = {k: (_number(path, k, raw[k]) if k in raw else v) for k, v in FLOAT_KEYS.items()}
    ints: dict[str, int | None] = {}
    for k, default in INT_KEYS.items():
        if k in raw:
            v = _number(path, k, raw[k])
            if not v.is_integer() or v < 1:
                raise input_error(path, k, f"must be a positive integer, got '{raw[k]}'")
            ints[k] = int(v)
        else:
            ints[k] = default
    choices = {}
    for k, allowed in CHOICE_KEYS.items():
        value = raw.get(k, allowed[0])
        if value not in allowed:
            raise input_error(path, k, f"must be one of {', '.join(allowed)}, got '{value}'")
        choices[k] = value
    if not (0.0 < floats["CFL"] <= 1.0):
        raise input_error(path, "CFL", f"must be in (0, 1] for stability, got {floats['CFL']:g}")
    if floats["x_max"] <= floats["x_min"]:
        raise input_error(path, "x_max", f"must be greater than x_min ({floats['x_min']:g}), got {floats['x_max']:g}")
    if floats["t_f"] <= floats["t_0"]:
        raise input_error(path, "t_f", f"must be greater than t_0 ({floats['t_0']:g}), got {floats['t_f']:g}")
    for k in ("c", "a", "C_v", "precision"):
        if floats[k] <= 0:
            raise input_error(path, k, f"must be > 0, got {floats[k]:g}")
    dt = None
    if "dt" in raw:
        dt = _number(path, "dt", raw["dt"])
        if dt <= 0:
            raise input_error(path, "dt", f"must be > 0, got {dt:g}")

    initial = {}
    for k, default in FIELD_KEYS.items():
        try:
            expr = parse(raw.get(k, default))
        except ExpressionError as err:
            raise input_error(path, k, str(err)) from None
        extra = sorted(expr.variables - {"x", "y"})
        if extra:
            raise input_error(path, k, f"unknown name(s) {', '.join(extra)} (an initial field may use x and y)")
        initial[k] = expr
    T0_ref = float(initial["T_0"].evaluate(x=0.5, y=0.5)) if initial["T_0"].variables else float(initial["T_0"].evaluate())

    bcs = {side: {f: BC() for f in FIELDS} for side in SIDES}
    for key, (fieldname, side) in BC_KEYS.items():
        if key in raw:
            bcs[side][fieldname] = _boundary(
                path, key, fieldname, raw[key], floats["a"], T0_ref, floats["source_amplitude"], floats["source_k"]
            )
    for lo, hi in (("l", "r"), ("d", "u")):
        for f in FIELDS:
            if (bcs[lo][f].kind == "periodic") != (bcs[hi][f].kind == "periodic"):
                raise input_error(path, f"{f}_{lo}", f"periodic must be set on both {lo} and {hi} sides")

    # density
    if "rho" not in raw:
        raise input_error(path, "rho", "missing (a .npy density file or an expression of x, y)")
    text = raw["rho"]
    if text.endswith(".npy") or text.startswith("numpy"):
        rho = _load_density(path, "rho", text)
        for k, axis in (("n_x", 1), ("n_y", 0)):
            if ints[k] is not None and k in raw and rho.shape[axis] != ints[k]:
                raise input_error(path, "rho", f"density shape {tuple(rho.shape)} does not match {k} {ints[k]}")
    else:
        try:
            expr = parse(text)
        except ExpressionError as err:
            raise input_error(path, "rho", str(err)) from None
        extra = sorted(expr.variables - {"x", "y"})
        if extra:
            raise input_error(path, "rho", f"unknown name(s) {', '.join(extra)} (a density expression may use x and y)")
        nx = ints["n_x"]
        ny = ints["n_y"] or nx
        h = (floats["x_max"] - floats["x_min"]) / nx
        xs = floats["x_min"] + (torch.arange(nx, dtype=torch.float64) + 0.5) * h
        ys = floats["y_min"] + (torch.arange(ny, dtype=torch.float64) + 0.5) * h
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        try:
            value = expr.evaluate(x=x, y=y)
        except ExpressionError as err:
            raise input_error(path, "rho", str(err)) from None
        rho = check_density(torch.as_tensor(value, dtype=torch.float64).expand(ny, nx).clone(), path, "rho")

    params = P1Params(
        c=floats["c"], a=floats["a"], Cv=floats["C_v"], closure=choices["closure"], cfl=floats["CFL"], dt=dt,
        x_min=floats["x_min"], x_max=floats["x_max"], y_min=floats["y_min"], precision=floats["precision"],
        fixed_point_iters=ints["fixed_point_iters"], T0=T0_ref,
        sigma_a=_opacity(path, "sigma_a", raw.get("sigma_a", OPACITY_KEYS["sigma_a"])),
        sigma_c=_opacity(path, "sigma_c", raw.get("sigma_c", OPACITY_KEYS["sigma_c"])),
        bcs=bcs,
    )
    export = Path(raw["export_file"]) if "export_file" in raw else None
    return SimulationConfig(
        params=params, rho=rho, initial=initial, t_0=floats["t_0"], t_f=floats["t_f"], n_export=ints["n_export"],
        export_file=export, export_mode=choices["export_mode"], write_mode=choices["write_mode"], source=str(path), raw=raw,
    )


def run_simulation(cfg: SimulationConfig, device=None, dtype: torch.dtype = torch.float64) -> Trajectory:
    """Simulate the configured problem, keeping ``n_export`` evenly spaced times from t_0 to t_f."""
    rho = cfg.rho.to(device=device, dtype=dtype)[None]
    state0 = cfg.initial_state(device, dtype)
    n = cfg.n_export
    times = [cfg.t_0 + (cfg.t_f - cfg.t_0) * i / max(1, n - 1) for i in range(n)] if n > 1 else [cfg.t_f]
    return simulate(rho, cfg.params, cfg.t_f, state0=state0, t0=cfg.t_0, save_times=times)


CSV_COLUMNS = ("t", "i", "j", "x", "y", "rho", "E", "F_x", "F_y", "T")


def dataframe_csv(traj: Trajectory, rho: torch.Tensor, params: P1Params, header: bool = True) -> str:
    """The long data frame: one row per saved time and cell, columns ``CSV_COLUMNS`` (i: row/y, j: column/x)."""
    ny, nx = rho.shape[-2:]
    grid = make_grid(params, ny, nx)
    y, x = np.meshgrid(grid.ycs.numpy(), grid.xcs.numpy(), indexing="ij")
    ii, jj = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    r = rho.detach().cpu().double().numpy().reshape(ny, nx)
    fields = [getattr(traj, n)[:, 0].detach().cpu().double().numpy() for n in ("E", "Fx", "Fy", "T")]
    for s, t in enumerate(traj.times):
        cols = [np.full(ny * nx, t), ii.ravel(), jj.ravel(), x.ravel(), y.ravel(), r.ravel()] + [f[s].ravel() for f in fields]
        table = np.stack(cols, axis=1)
        for row in table:
            writer.writerow([f"{row[0]:.9g}", int(row[1]), int(row[2])] + [f"{v:.9g}" for v in row[3:]])
    return buf.getvalue()


def export(cfg: SimulationConfig, traj: Trajectory, out_dir: str | Path | None = None) -> dict[str, str]:
    """Write the CSV data frame (``export_mode dataframe``) and the ``.npz`` of all saved fields.

    Relative ``export_file`` paths are taken in ``out_dir`` when given, else in the current folder.
    Without ``export_file``, ``<out_dir or .>/simulation.csv``.
    """
    target = cfg.export_file or Path("simulation.csv")
    if not target.is_absolute():
        target = Path(out_dir or ".") / target
    target.parent.mkdir(parents=True, exist_ok=True)
    written = {}
    if cfg.export_mode == "dataframe":
        append = cfg.write_mode == "append" and target.is_file() and target.stat().st_size > 0
        text = dataframe_csv(traj, cfg.rho, cfg.params, header=not append)
        with target.open("a" if append else "w") as f:
            f.write(text)
        written["csv"] = str(target)
    npz = target.with_suffix(".npz")
    ny, nx = cfg.rho.shape
    grid = make_grid(cfg.params, ny, nx)
    np.savez_compressed(
        npz, times=np.asarray(traj.times), x=grid.xcs.numpy(), y=grid.ycs.numpy(), rho=cfg.rho.numpy(),
        **{name: getattr(traj, attr)[:, 0].detach().cpu().double().numpy() for name, attr in (("E", "E"), ("F_x", "Fx"), ("F_y", "Fy"), ("T", "T"))},
    )
    written["npz"] = str(npz)
    return written

