"""physinv synth noisy-masks: each corruption does what it says; the command writes the masks folder."""

import json

import numpy as np
import pytest
from scipy import ndimage

from physinv.io.images import read_labels
from physinv.synth.noisy_masks import MaskNoise, _disk, corrupt_view


def _two_touching():
    labels = np.zeros((20, 20), np.int64)
    labels[4:12, 2:10] = 3
    labels[4:12, 10:18] = 5
    return labels


def _segments(x):
    return [int(i) for i in np.unique(x) if i > 0]


def test_only_relabelling_keeps_pixels_but_changes_ids():
    labels = _two_touching()
    noisy, _ = corrupt_view(labels, MaskNoise.none(), np.random.default_rng(0))
    assert len(_segments(noisy)) == 2
    for i in _segments(labels):  # each ground-truth segment maps to exactly one noisy id
        assert len(np.unique(noisy[labels == i])) == 1
    assert (noisy > 0).sum() == (labels > 0).sum()


@pytest.mark.parametrize(
    "noise, check",
    [
        (MaskNoise(0, 0, 0, 1.0, 0, 0), lambda n, l: (n == 0).all()),  # every instance missed
        (MaskNoise(0, 1.0, 0, 0, 0, 0), lambda n, l: len(_segments(n)) == 1 and ((n > 0) == (l > 0)).all()),  # merged
        (MaskNoise(0, 0, 1.0, 0, 0, 0), lambda n, l: len(_segments(n)) == 4 and ((n > 0) == (l > 0)).all()),  # split
        (MaskNoise(0, 0, 0, 0, 20.0, 0), lambda n, l: len(_segments(n)) > 2),  # blobs
    ],
)
def test_each_corruption(noise, check):
    labels = _two_touching()
    noisy, _ = corrupt_view(labels, noise, np.random.default_rng(1))
    assert check(noisy, labels)


def test_boundary_noise_changes_only_a_band_of_width_r():
    labels = _two_touching()
    rng = np.random.default_rng(3)
    for _ in range(5):
        noisy, _ = corrupt_view(labels, MaskNoise(2, 0, 0, 0, 0, 0), rng)
        changed = (noisy > 0) != (labels > 0)
        disk = _disk(2)
        edge = np.zeros_like(changed)
        for i in _segments(labels):  # the band of radius 2 around each instance's own boundary
            edge |= ndimage.binary_dilation(labels == i, structure=disk) & ~ndimage.binary_erosion(labels == i, structure=disk)
        assert changed.any() and not (changed & ~edge).any()


def test_class_confusion_picks_another_class():
    labels = _two_touching()
    _, classes = corrupt_view(labels, MaskNoise(0, 0, 0, 0, 0, 1.0), np.random.default_rng(0), {3: "cube", 5: "sphere"})
    assert sorted(classes.values()) == ["cube", "sphere"]  # swapped: each took the other's class


def test_noisy_masks_command(tiny_scene, tmp_path, run_cli):
    out = tmp_path / "masks"
    line = run_cli(["synth", "noisy-masks", tiny_scene, "--split", "train", "--out", out, "--classes", "--seed", "1"])
    files = sorted(p.name for p in out.glob("r_*.png"))
    assert files == [f"r_{i:03d}.png" for i in range(8)]
    masks = np.stack([read_labels(out / f) for f in files])
    assert masks.shape == (8, 32, 32)
    classes = json.loads((out / "classes.json").read_text())
    assert set(classes) == set(files)
    assert all(int(k) in masks[files.index(f)] for f, d in classes.items() for k in d)
    assert set(v for d in classes.values() for v in d.values()) <= {"sphere", "cube", "cylinder"}
    assert 0.0 < line["pq"] < 1.0 and line["pq_scene"] < line["pq"]


def test_noise_free_masks_have_pq_one_but_inconsistent_ids(tiny_scene, tmp_path, run_cli):
    out = tmp_path / "clean"
    argv = ["synth", "noisy-masks", str(tiny_scene), "--out", str(out), "--boundary-px", "0", "--p-merge", "0",
            "--p-split", "0", "--p-miss", "0", "--false-blobs", "0"]
    line = run_cli(argv)
    assert line["pq"] == pytest.approx(1.0) and line["miou"] == pytest.approx(1.0)
    assert line["pq_scene"] < 0.5  # every view has its own ids


def test_bad_probability_is_one_line(tiny_scene, tmp_path, cli_error):
    msg = cli_error(["synth", "noisy-masks", str(tiny_scene), "--out", str(tmp_path / "m"), "--p-miss", "1.5"])
    assert msg == "physinv: error: --p-miss: expected a probability in [0, 1], got 1.5"
