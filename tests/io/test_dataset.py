"""load_views on the synthesized tiny scene, and its one-line errors on broken data sets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from physinv.errors import PhysinvError
from physinv.io.dataset import load_views
from physinv.io.images import read_image, write_image


def test_load_views_shapes_and_compositing(tiny_scene):
    views = load_views(tiny_scene, "train", maps=("depth", "normal", "albedo", "instance"))
    assert views.images.shape == (8, 32, 32, 3) and views.images.dtype == torch.float32
    assert views.alpha.shape == (8, 32, 32)
    assert views.c2w.shape == (8, 4, 4) and views.intrinsics.shape == (8, 4)
    assert (views.width, views.height) == (32, 32)
    torch.testing.assert_close(views.aabb, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    assert views.maps["instance"].dtype == torch.int64 and views.maps["normal"].shape == (8, 32, 32, 3)
    # composited on the data set's white background: empty pixels are exactly white
    empty = views.alpha == 0
    assert empty.any() and (views.images[empty] == 1.0).all()
    raw = read_image(views.source.parent / "train" / "r_000.png")
    black = load_views(tiny_scene, "train", background=[0.0, 0.0, 0.0])
    np.testing.assert_allclose(black.images[0].numpy(), raw[..., :3] * raw[..., 3:], atol=1e-6)
    assert len(load_views(tiny_scene, "test")) == 2
    assert set(views.lights) == {"sky0"} and views.envmaps["sky0"].is_file()


def _copy(tiny_scene, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_scene, data)
    return data


def test_missing_image_is_named(tiny_scene, tmp_path, cli_error):
    data = _copy(tiny_scene, tmp_path)
    (data / "train" / "r_003.png").unlink()
    with pytest.raises(PhysinvError, match=r"r_003.png: image not found \(frames\[3\].file_path in transforms_train.json\)"):
        load_views(data, "train")
    line = cli_error(["synth", "inspect", str(data)])
    assert line.startswith("physinv: error: ") and "train/r_003.png: image not found" in line


def test_mixed_sizes_are_named(tiny_scene, tmp_path, cli_error):
    data = _copy(tiny_scene, tmp_path)
    write_image(data / "train" / "r_005.png", np.zeros((16, 32, 4)))
    with pytest.raises(PhysinvError, match=r"r_005.png: image is 32x16 but r_000.png is 32x32"):
        load_views(data, "train")
    assert "r_005.png: image is 32x16" in cli_error(["synth", "inspect", str(data)])
    # a per-frame size in the json that disagrees with frame 0
    meta = json.loads((data / "transforms_test.json").read_text())
    meta["frames"][1]["w"] = 48
    (data / "transforms_test.json").write_text(json.dumps(meta))
    with pytest.raises(PhysinvError, match=r"transforms_test.json: frames\[1\]: view is 48x32 but frames\[0\] is 32x32"):
        load_views(data, "test")


def test_missing_map_is_named(tiny_scene, tmp_path):
    data = _copy(tiny_scene, tmp_path)
    meta = json.loads((data / "transforms_train.json").read_text())
    del meta["frames"][2]["depth_path"]
    (data / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(PhysinvError, match=r"transforms_train.json: frames\[2\].depth_path: missing"):
        load_views(data, "train", maps=("depth",))
    with pytest.raises(PhysinvError, match="unknown map kind"):
        load_views(data, "train", maps=("colour",))


@pytest.mark.parametrize("dialect", ["ngp", "nerfstudio"])
def test_other_dialects_load_the_same_views(tiny_scene, tmp_path, dialect):
    """Rewrite the synthesized split in another dialect (nerfstudio with masks from alpha) and reload it."""
    from physinv.io.transforms import read_transforms, write_transforms

    blender = load_views(tiny_scene, "test")
    t = read_transforms(tiny_scene / "transforms_test.json")
    for i, frame in enumerate(t.frames):
        frame.extras = {"mask_path": tmp_path / f"mask_{i}.png"}
        write_image(frame.extras["mask_path"], (read_image(frame.image_path)[..., 3] > 0.5).astype(np.uint8) * 255)
    write_transforms(tmp_path / "transforms.json", t, dialect)
    other = load_views(tmp_path, "test", maps=("mask",))
    assert other.source.name == "transforms.json"
    torch.testing.assert_close(other.c2w, blender.c2w, rtol=0, atol=0)
    torch.testing.assert_close(other.intrinsics, blender.intrinsics)
    torch.testing.assert_close(other.images, blender.images)
    torch.testing.assert_close(other.maps["mask"], (blender.alpha > 0.5).float())
