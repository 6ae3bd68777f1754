"""transforms.json: lossless round trips of the three dialects, and one-line errors on bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from physinv.errors import PhysinvError
from physinv.io.images import write_image
from physinv.io.transforms import Frame, Transforms, read_transforms, split_path, write_transforms


def _random_pose(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a rotation
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = q, rng.normal(size=3) * 3
    return c2w


def _transforms(tmp_path: Path, square_centred: bool, per_frame: bool = False) -> Transforms:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(4):
        w, h = (40, 30) if not per_frame else (40 + 2 * i, 30 + i)
        k = np.array([50.0, 50.0, w / 2, h / 2]) if square_centred else np.array([50.0 + i, 47.5, w / 2 + 1.25, h / 2 - 0.75])
        extras = {"light": "sky0", "mask_path": tmp_path / "masks" / f"m_{i}.png", "time": i * 0.5}
        frames.append(Frame(tmp_path / "images" / f"r_{i}.png", _random_pose(rng), k, w, h, extras))
    extras = {"aabb": [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], "background": [1.0, 1.0, 1.0], "aabb_scale": 4,
              "envmaps": [{"name": "sky0", "file_path": tmp_path / "envmaps" / "sky0.exr"}]}
    return Transforms(tmp_path / "transforms.json", frames, extras)


@pytest.mark.parametrize("dialect", ["blender", "ngp", "nerfstudio"])
@pytest.mark.parametrize("square_centred", [True, False])
def test_round_trip_same_cameras(tmp_path, dialect, square_centred):
    original = _transforms(tmp_path, square_centred)
    path = write_transforms(tmp_path / f"transforms_{dialect}.json", original, dialect=dialect)
    back = read_transforms(path)
    assert len(back.frames) == len(original.frames)
    for a, b in zip(original.frames, back.frames):
        np.testing.assert_allclose(b.c2w, a.c2w, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b.intrinsics, a.intrinsics, rtol=1e-12)
        assert (b.width, b.height) == (a.width, a.height)
        assert b.image_path == a.image_path
        assert b.extras["mask_path"] == a.extras["mask_path"]
        assert b.extras["light"] == "sky0" and b.extras["time"] == a.extras["time"]
    assert back.extras["aabb"] == original.extras["aabb"]
    assert back.extras["envmaps"][0]["file_path"] == tmp_path / "envmaps" / "sky0.exr"
    assert back.extras["aabb_scale"] == 4


def test_dialect_fields_on_disk(tmp_path):
    t = _transforms(tmp_path, square_centred=True)
    blender = json.loads(write_transforms(tmp_path / "b.json", t, "blender").read_text())
    assert math.isclose(blender["camera_angle_x"], 2 * math.atan(20 / 50)) and "fl_x" not in blender
    assert blender["frames"][0]["file_path"] == "./images/r_0"  # Blender stores no extension
    ngp = json.loads(write_transforms(tmp_path / "n.json", t, "ngp").read_text())
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h", "aabb_scale"} <= set(ngp)
    assert ngp["frames"][0]["file_path"] == "./images/r_0.png"
    ns = json.loads(write_transforms(tmp_path / "s.json", t, "nerfstudio").read_text())
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h", "mask_path"} <= set(ns["frames"][0])
    assert ns["frames"][0]["mask_path"] == "./masks/m_0.png"
    assert read_transforms(tmp_path / "s.json").extras["dialect"] == "nerfstudio"
    assert read_transforms(tmp_path / "n.json").extras["dialect"] == "ngp"


def test_nerfstudio_per_frame_sizes_round_trip(tmp_path):
    t = _transforms(tmp_path, square_centred=False, per_frame=True)
    for dialect in ("nerfstudio", "ngp", "blender"):
        back = read_transforms(write_transforms(tmp_path / f"{dialect}.json", t, dialect))
        assert [(f.width, f.height) for f in back.frames] == [(f.width, f.height) for f in t.frames]
        for a, b in zip(t.frames, back.frames):
            np.testing.assert_allclose(b.intrinsics, a.intrinsics, rtol=1e-12)


def test_blender_file_without_sizes_reads_the_image_header(tmp_path):
    write_image(tmp_path / "train" / "r_0.png", np.zeros((24, 36, 4)))
    pose = np.eye(4)
    pose[2, 3] = 4.0
    data = {"camera_angle_x": 0.8, "frames": [{"file_path": "./train/r_0", "rotation": 0.1, "transform_matrix": pose.tolist()}]}
    (tmp_path / "transforms_train.json").write_text(json.dumps(data))
    t = read_transforms(split_path(tmp_path, "train"))
    f = t.frames[0]
    assert f.image_path == tmp_path / "train" / "r_0.png"
    assert (f.width, f.height) == (36, 24)
    focal = 0.5 * 36 / math.tan(0.4)
    np.testing.assert_allclose(f.intrinsics, [focal, focal, 18, 12])
    assert f.extras["rotation"] == 0.1
    # the per-frame value wins over the top-level one (nerfstudio)
    data["fl_x"], data["w"], data["h"] = 30.0, 36, 24
    data["frames"][0]["fl_x"] = 33.0
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    assert read_transforms(tmp_path / "transforms.json").frames[0].intrinsics[0] == 33.0


def _good(n=4) -> dict:
    return {"camera_angle_x": 0.7, "w": 8, "h": 8, "frames": [{"file_path": f"r_{i}.png", "transform_matrix": np.eye(4).tolist()} for i in range(n)]}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["frames"][3].update(transform_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "transforms_train.json: frames[3].transform_matrix: expected a 4x4 matrix"),
        (lambda d: d["frames"][1].update(transform_matrix="eye"), "transforms_train.json: frames[1].transform_matrix: expected a 4x4 matrix"),
        (lambda d: d["frames"][2].pop("transform_matrix"), "transforms_train.json: frames[2].transform_matrix: missing"),
        (lambda d: d["frames"][0].pop("file_path"), "transforms_train.json: frames[0].file_path: missing"),
        (lambda d: d.update(camera_angle_x="wide"), "transforms_train.json: camera_angle_x: expected a finite number, got 'wide'"),
        (lambda d: d.pop("camera_angle_x"), "transforms_train.json: camera_angle_x: missing"),
        (lambda d: d.update(frames={}), "transforms_train.json: frames: expected a non-empty list"),
        (lambda d: d.update(aabb=[1, 2, 3]), "transforms_train.json: aabb: expected"),
        (lambda d: d["frames"][1].update(fl_x=-3), "transforms_train.json: frames[1].fl_x: expected a positive number, got -3"),
    ],
)
def test_malformed_fields_are_named(tmp_path, mutate, message):
    data = _good()
    mutate(data)
    path = tmp_path / "transforms_train.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PhysinvError) as err:
        read_transforms(path)
    assert str(err.value).startswith(message)


def test_truncated_file(tmp_path):
    path = tmp_path / "transforms_train.json"
    path.write_text(json.dumps(_good())[:57])
    with pytest.raises(PhysinvError, match=r"^transforms_train.json: not valid JSON \(line 1, column \d+"):
        read_transforms(path)


def test_cli_names_file_and_field(tmp_path, cli_error):
    data = _good()
    data["frames"][3]["transform_matrix"] = [[1, 2], [3, 4]]
    (tmp_path / "transforms_train.json").write_text(json.dumps(data))
    line = cli_error(["synth", "inspect", str(tmp_path)])
    assert line == "physinv: error: transforms_train.json: frames[3].transform_matrix: expected a 4x4 matrix"
    (tmp_path / "transforms_train.json").write_text(json.dumps(_good())[:-40])
    assert cli_error(["synth", "inspect", str(tmp_path)]).startswith("physinv: error: transforms_train.json: not valid JSON")
    assert cli_error(["synth", "inspect", str(tmp_path / "nowhere")]).endswith("nowhere: data folder not found")
