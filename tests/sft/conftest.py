"""A tiny synthesized φ-SfT sequence shared by the sft tests (48x48 px, 8 frames, 5x5 template)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sequence(tmp_path_factory) -> Path:
    import torch

    from physinv.sft.data import SynthConfig, synthesize_sequence

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sft_seq") / "seq"
    synthesize_sequence(out, SynthConfig(frames=8, res=48, template_n=5, sim_n=9, spp=4, seed=3), progress=False)
    return out


@pytest.fixture
def sequence_copy(tiny_sequence, tmp_path) -> Path:
    """A writable copy of the tiny sequence (for tests that break it)."""
    dst = tmp_path / "seq"
    shutil.copytree(tiny_sequence, dst)
    return dst
