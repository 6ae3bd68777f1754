"""Fixtures of the instance tests."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def run_cli(capsys):
    """``run_cli(argv) -> dict``: run ``physinv`` with argv, assert success, return its last JSON line."""
    from physinv.cli import main

    def run(argv) -> dict:
        try:
            main([str(a) for a in argv])
        except SystemExit as exc:
            assert exc.code in (0, None), capsys.readouterr().err
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    return run
