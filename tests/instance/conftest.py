"""Fixtures of the instance tests."""

from __future__ import annotations


import pytest


@pytest.fixture(scope="session")
def instance_nerf(tiny_scene, tmp_path_factory):
    """A tiny ``ngp`` run on the tiny scene (the pattern of tests/nerf/conftest.py::ngp_run)."""
    import torch

    from physinv.nerf.config import NerfConfig
    from physinv.nerf.train import train

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("inerf") / "ngp"
    tiny = dict(levels=8, log2_table_size=12, finest_resolution=64, batch_rays=256, grid_resolution=32, render_steps=96,
                samples_per_ray=32, eval_every=1000, eval_rays=1024, checkpoint_every=1000)
    train(tiny_scene, run, NerfConfig(method="ngp", steps=150, **tiny), quiet=True)
    return run


@pytest.fixture(scope="session")
def gt_masks(tiny_scene, tmp_path_factory):
    """Masks folder with the ground-truth instance maps of the training views (consistent ids)."""
    import shutil

    out = tmp_path_factory.mktemp("gtmasks")
    for f in sorted((tiny_scene / "train").glob("r_*_instance.png")):
        shutil.copy(f, out / f.name.replace("_instance", ""))
    return out
