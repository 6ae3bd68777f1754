"""``instance make-scenes`` on 2 forked Gloo ranks (the torchrun variables set) writes the folder one
process writes: each scene has its own seed, rank 0 merges index.json; a killed run resumes."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from physinv.cli import main

torch.set_num_threads(1)

ARGS = ["instance", "make-scenes", "--count", "3", "--res", "16", "--seed", "4"]


def _cli(argv: list[str]) -> None:
    with open(os.devnull, "w") as f, contextlib.redirect_stdout(f):
        main(argv)


def _scene_files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "metrics.json"}  # metrics name the process count


def test_two_ranks_write_what_one_writes(ranks, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    with pytest.raises(SystemExit) as done:
        _cli([*ARGS, "--out", str(one)])
    assert done.value.code in (0, None)
    assert ranks.run(_cli, 2, [*ARGS, "--out", str(two)]) == [0, 0]
    files = _scene_files(two)
    assert sorted(files) == ["index.json", "scene_00000.npz", "scene_00001.npz", "scene_00002.npz", "settings.json"]
    assert files == _scene_files(one)
    # a scene lost with its rank is made again, the same; other settings into the folder are refused
    (two / "scene_00001.npz").unlink()
    assert ranks.run(_cli, 2, [*ARGS, "--out", str(two)]) == [0, 0]
    assert _scene_files(two) == _scene_files(one)
    with pytest.raises(SystemExit) as refused:
        _cli([*ARGS[:-1], "5", "--out", str(one)])
    assert refused.value.code == 2


def _train(scenes, run, steps):
    from physinv.instance.detector import train_detector

    torch.set_num_threads(1)
    train_detector(scenes, run, steps=steps, held_out=2, lr=1e-3, scenes_per_step=2, quiet=True)


def test_detector_two_ranks_take_one_process_steps(ranks, tmp_path):
    """NeRF-RCNN with 2 scenes per step: 2 ranks (one scene each, DDP; each scene slot with its own
    seed for augmentation and RoI sampling) end where one process ends after 2 steps."""
    from physinv.core.train import load_checkpoint
    from physinv.instance.scenes import write_scenes

    write_scenes(tmp_path / "s", 6, res=16, seed=1)
    _train(tmp_path / "s", tmp_path / "one", 2)
    assert ranks.run(_train, 2, tmp_path / "s", tmp_path / "two", 2) == [0, 0]
    one = load_checkpoint(tmp_path / "one" / "checkpoint.pt")
    two = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert one["step"] == two["step"] == 2 and one["config"]["scenes_per_step"] == 2
    for k, v in one["state"]["model"].items():
        torch.testing.assert_close(two["state"]["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
