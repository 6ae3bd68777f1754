"""NeRF fixtures: one small trained ``ngp`` run per test session, shared by the pipeline and protocol tests."""

import pytest
import torch

from physinv.nerf.config import NerfConfig
from physinv.nerf.train import train

# a small hash grid and few rays keep every run here at a few seconds on one CPU core
TINY = dict(levels=8, log2_table_size=12, finest_resolution=64, batch_rays=256, grid_resolution=32, render_steps=96, samples_per_ray=32, eval_every=50, eval_rays=1024, checkpoint_every=50)


@pytest.fixture(name="TINY")
def tiny_config() -> dict:
    """The small hash-grid configuration of these tests (a copy: tests may extend it)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def ngp_run(tiny_scene, tmp_path_factory):
    """(run folder, TrainResult) of ``ngp`` trained 120 steps on the tiny scene (8 views, 32x32)."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("nerf") / "ngp"
    result = train(tiny_scene, run, NerfConfig(method="ngp", steps=120, **dict(TINY, eval_every=20)), quiet=True)
    return run, result
