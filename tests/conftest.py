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
