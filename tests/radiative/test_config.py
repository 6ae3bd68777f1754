"""The presentation's configuration format, the safe expression parser and `physinv radiative simulate`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from physinv.cli import main
from physinv.errors import PhysinvError
from physinv.radiative.configfile import load_simulation_config
from physinv.radiative.expr import ExpressionError, parse

def run_ok(argv):
    """Run the CLI; a successful typer command ends with SystemExit(0)."""
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


SLIDES_CONFIG = """\
x_min 0
x_max 1

c 299
a 0.01372
C_v 0.14361

CFL 0.5
precision 1e-6
t_0 0
t_f 0.001

rho numpy.inputs/2743.npy
sigma_a rho*T
sigma_c rho*T

E_0 0.01372*(5^4)
F_0_x 0
F_0_y 0
T_0 5

E_u neumann
F_u_x neumann
F_u_y neumann
T_u neumann

E_d neumann
F_d_x neumann
F_d_y neumann
T_d neumann

E_l ponctuel(0,1)
F_l_x 0
F_l_y 0
T_l 5

E_r neumann
F_r_x neumann
F_r_y neumann
T_r neumann

export_file data/df_simu.csv
export_mode dataframe
write_mode truncate
"""


def test_expressions():
    assert parse("0.01372*(5^4)").evaluate() == pytest.approx(0.01372 * 625)
    assert parse("2^3^2").evaluate() == 512.0  # right-associative
    assert parse("-2^2").evaluate() == -4.0
    assert parse("2**-1").evaluate() == 0.5
    assert parse("1e-6 + .5").evaluate() == pytest.approx(0.500001)
    assert parse("max(1, 2, 3) - min(4, 5) + clip(7, 0, 2) + sin(pi/2)").evaluate() == pytest.approx(3 - 4 + 2 + 1)
    rho, T = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    torch.testing.assert_close(parse("rho*T").evaluate(rho=rho, T=T), rho * T)
    assert parse("rho * T + x").variables == frozenset({"rho", "T", "x"})
    for bad, msg in [
        ("2 +", "unexpected end"),
        ("(1 + 2", "expected '\\)'"),
        ("__import__('os')", "unexpected character"),
        ("foo(1)", "unknown function 'foo'"),
        ("1 2", "unexpected '2'"),
        ("sin(1, 2)", "takes 1 argument"),
        ("rho.T", "unexpected character"),
    ]:
        with pytest.raises(ExpressionError, match=msg):
            parse(bad)
    with pytest.raises(ExpressionError, match="unknown name"):
        parse("rho*q").evaluate(rho=1.0)


def _write(tmp_path, text, rho=None):
    (tmp_path / "inputs").mkdir(exist_ok=True)
    np.save(tmp_path / "inputs" / "2743.npy", np.full((16, 16), 0.5) if rho is None else rho)
    path = tmp_path / "sim.cfg"
    path.write_text(text)
    return path


def test_slides_config_parses_with_the_slides_values(tmp_path):
    cfg = load_simulation_config(_write(tmp_path, SLIDES_CONFIG))
    p = cfg.params
    assert (p.c, p.a, p.Cv, p.cfl, p.closure) == (299.0, 0.01372, 0.14361, 0.5, "slides")
    assert cfg.t_f == 0.001 and tuple(cfg.rho.shape) == (16, 16)
    left = p.bcs["l"]
    assert left["E"].kind == "ponctuel" and (left["E"].lo, left["E"].hi) == (0.0, 1.0)
    assert left["E"].base == pytest.approx(0.01372 * 5**4)
    assert left["T"].kind == "value" and left["T"].value == 5.0
    assert p.bcs["r"]["F_x"].kind == "neumann"
    state = cfg.initial_state()
    assert state.E[0, 3, 3].item() == pytest.approx(8.575) and state.T.min().item() == 5.0
    rho = torch.rand(4, 4)
    torch.testing.assert_close(p.sigma_a(rho, rho + 1), rho * (rho + 1))


def test_simulate_cli_writes_dataframe_and_npz(tmp_path, capsys, monkeypatch):
    path = _write(tmp_path, SLIDES_CONFIG)
    monkeypatch.chdir(tmp_path)
    run_ok(["radiative", "simulate", str(path), "--out", str(tmp_path / "o")])
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    csv_path = tmp_path / "o" / "data" / "df_simu.csv"
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "t,i,j,x,y,rho,E,F_x,F_y,T"
    assert len(lines) == 1 + 11 * 16 * 16
    npz = np.load(tmp_path / "o" / "data" / "df_simu.npz")
    assert npz["E"].shape == (11, 16, 16) and npz["times"][-1] == pytest.approx(0.001)
    assert metrics["steps"] > 0 and metrics["csv"].endswith("df_simu.csv")
    # the source raised E near the left edge (sin(2π·100·t) > 0 for t < 0.005)
    assert npz["E"][-1][:, 0].mean() > npz["E"][-1][:, -1].mean() > 8.575 - 1e-9
    # append mode adds rows without a second header
    path.write_text(SLIDES_CONFIG.replace("truncate", "append"))
    run_ok(["radiative", "simulate", str(path), "--out", str(tmp_path / "o")])
    lines2 = csv_path.read_text().splitlines()
    assert len(lines2) == 2 * len(lines) - 1 and lines2.count(lines[0]) == 1


@pytest.mark.parametrize(
    "edit,message",
    [
        (("CFL 0.5", "CFL 1.5"), r"sim.cfg: CFL: must be in \(0, 1\] for stability, got 1.5"),
        (("x_max 1", "x_max 1\nfoo 3"), r"sim.cfg: line 3: foo: unknown key"),
        (("sigma_a rho*T", "sigma_a rho*T)"), r"sim.cfg: sigma_a: unexpected '\)'"),
        (("sigma_a rho*T", "sigma_a rho*Q"), r"sim.cfg: sigma_a: unknown name\(s\) Q"),
        (("E_0 0.01372*(5^4)", "E_0 0.01372*(5^"), r"sim.cfg: E_0: unexpected end of expression"),
        (("t_f 0.001", "t_f abc"), r"sim.cfg: t_f: '.*' must be a constant"),
        (("E_l ponctuel(0,1)", "E_l ponctuel(1,0)"), r"sim.cfg: E_l: ponctuel\(1, 0\): the extent must have lo <= hi"),
        (("export_mode dataframe", "export_mode excel"), r"sim.cfg: export_mode: must be one of dataframe, npz"),
        (("rho numpy.inputs/2743.npy", "rho numpy.inputs/none.npy"), r"sim.cfg: rho: density file 'inputs/none.npy' not found"),
        (("T_0 5", "T_0 -1"), None),
    ],
)
def test_bad_configs_exit_2_with_one_line(tmp_path, capsys, edit, message):
    path = _write(tmp_path, SLIDES_CONFIG.replace(*edit))
    with pytest.raises(SystemExit) as exc:
        main(["radiative", "simulate", str(path), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("physinv: error: ")
    if message is not None:
        assert __import__("re").search(message, err[0]), err[0]
    else:
        assert "T_0: the temperature must be > 0" in err[0]


@pytest.mark.parametrize(
    "rho,message",
    [
        (np.ones((4, 4, 4)), r"rho: density 'inputs/2743.npy' must be a 2-D \(Ny, Nx\) array, got shape \(4, 4, 4\)"),
        (np.full((8, 8), -0.1), r"rho: density 'inputs/2743.npy' has negative values"),
        (np.full((8, 8), np.nan), r"rho: density 'inputs/2743.npy' has non-finite values"),
    ],
)
def test_bad_density_files(tmp_path, capsys, rho, message):
    path = _write(tmp_path, SLIDES_CONFIG, rho=rho)
    with pytest.raises(SystemExit) as exc:
        main(["radiative", "simulate", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and __import__("re").search(message, err[0]), err


def test_density_shape_must_match_declared_grid(tmp_path):
    path = _write(tmp_path, SLIDES_CONFIG + "n_x 32\n")
    with pytest.raises(PhysinvError, match=r"rho: density shape \(16, 16\) does not match n_x 32"):
        load_simulation_config(path)


def test_density_expression_and_p1_closure(tmp_path):
    text = SLIDES_CONFIG.replace("rho numpy.inputs/2743.npy", "rho 0.5 + 0.2*sin(2*pi*x)*cos(pi*y)") + "n_x 8\nclosure p1\n"
    cfg = load_simulation_config(_write(tmp_path, text))
    assert tuple(cfg.rho.shape) == (8, 8) and cfg.params.closure == "p1"
    assert cfg.params.wave_speed == pytest.approx(299 / math.sqrt(3))
    assert cfg.rho[0, 1].item() == pytest.approx(0.5 + 0.2 * math.sin(2 * math.pi * 3 / 16) * math.cos(math.pi / 16))


def test_shipped_slides_config_parses():
    from pathlib import Path

    cfg = load_simulation_config(Path(__file__).resolve().parents[2] / "data" / "radiative" / "slides.cfg")
    assert tuple(cfg.rho.shape) == (64, 64) and cfg.t_f == 0.01 and cfg.params.bcs["l"]["E"].kind == "ponctuel"
    assert cfg.rho.max().item() == pytest.approx(2.5, abs=0.05)
