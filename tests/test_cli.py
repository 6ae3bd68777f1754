import json
import subprocess
import sys

import pytest

from physinv.cli import main
from physinv.io.runs import emit_metrics


def test_help_lists_groups_and_demo():
    out = subprocess.run([sys.executable, "-m", "physinv", "--help"], capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})
    assert out.returncode == 0
    for name in ["synth", "nerf", "relight", "radiative", "sft", "instance", "demo"]:
        assert f" {name} " in out.stdout


def test_user_error_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--only", "nosuch", "--out", "unused"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["physinv: error: --only: unknown section(s) nosuch (known: synth, radiative, nerf, relight, sft, instance)"]


def test_emit_metrics_last_line_and_file(tmp_path, capsys):
    emit_metrics({"psnr": 31.5, "bad": float("nan")}, tmp_path)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"psnr": 31.5, "bad": None}
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"psnr": 31.5, "bad": None}
