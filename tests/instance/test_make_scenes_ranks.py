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
