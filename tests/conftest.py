"""Shared fixtures. ``tiny_scene``: one small Mitsuba-rendered data set per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """Path of a synthesized scene: the built-in 3-object scene, 8 train / 2 test views, 32x32, 16 spp,
    with albedo, normal, depth and instance maps (see ``physinv.synth.scene``)."""
    from physinv.synth.scene import synthesize

    out = tmp_path_factory.mktemp("tiny_scene")
    return synthesize(out, views=8, test_views=2, res=32, spp=16, seed=0, progress=False)


@pytest.fixture
def cli_error(capsys):
    """``cli_error(argv) -> str``: run ``physinv.cli.main(argv)``, assert it exits with code 2 and
    writes exactly one stderr line (no traceback); return that line."""
    from physinv.cli import main

    def run(argv) -> str:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err  # one line, no traceback
        return err[0]

    return run
