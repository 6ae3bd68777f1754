"""Bad input to `physinv relight`: one line naming the file and field, exit code 2, nothing written over."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from physinv.io.hdr import write_hdr
from physinv.io.images import write_image


def test_envmap_not_hdr(tmp_path, cli_error):
    write_image(tmp_path / "map.png", np.zeros((16, 32, 3), np.float32))
    line = cli_error(["relight", "fit-envmap", str(tmp_path / "map.png"), "--out", str(tmp_path / "light.json"), "--device", "cpu"])
    assert line == f"physinv: error: {tmp_path / 'map.png'}: not an HDR environment map (expected .exr or .hdr; 8-bit images clip the light)"
    assert not (tmp_path / "light.json").exists()


def test_envmap_not_two_to_one(tmp_path, cli_error):
    write_hdr(tmp_path / "map.exr", np.ones((16, 16, 3), np.float32))
    line = cli_error(["relight", "fit-envmap", str(tmp_path / "map.exr"), "--out", str(tmp_path / "light.json"), "--device", "cpu"])
    assert line == f"physinv: error: {tmp_path / 'map.exr'}: an equirectangular map must be twice as wide as high, got 16x16"
    assert not (tmp_path / "light.json").exists()


def test_fit_envmap_writes_json_and_exr(tmp_path, capsys):
    from physinv.cli import main
    from physinv.io.hdr import read_hdr

    write_hdr(tmp_path / "map.exr", np.ones((8, 16, 3), np.float32) * 2.0)
    with pytest.raises(SystemExit) as exc:
        main(["relight", "fit-envmap", str(tmp_path / "map.exr"), "--lobes", "8", "--steps", "50", "--out", str(tmp_path / "light.json"), "--device", "cpu"])
    assert exc.value.code in (0, None)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["relative_l2"] < 0.05
    assert len(json.loads((tmp_path / "light.json").read_text())["lobes"]) == 8
    back = read_hdr(tmp_path / "light.exr")
    assert back.shape == (8, 16, 3) and abs(float(back.mean()) - 2.0) < 0.1


def _strip_alpha(src, dst):
    """Copy a synth data set with its images made RGB (no alpha) and no mask_path."""
    from physinv.io.images import read_image

    shutil.copytree(src, dst)
    for split in ("train", "test"):
        path = dst / f"transforms_{split}.json"
        data = json.loads(path.read_text())
        for frame in data["frames"]:
            png = dst / (frame["file_path"] + ".png")
            write_image(png, read_image(png)[..., :3])
        path.write_text(json.dumps(data))
    return dst


def test_data_without_masks(tiny_scene, tmp_path, cli_error):
    data = _strip_alpha(tiny_scene, tmp_path / "rgb")
    line = cli_error(["relight", "fit", str(data), "--out", str(tmp_path / "run"), "--steps", "1", "--device", "cpu", "--quiet"])
    assert line == f"physinv: error: {data / 'transforms_train.json'}: frames: no masks: the images have no alpha channel and the frames no mask_path (PhySG needs object masks)"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_light_naming_no_map(tiny_scene, tmp_path, cli_error):
    """A test frame whose `light` is neither an envmaps entry nor a file: eval says which frame."""
    from physinv.relight.config import RelightConfig
    from physinv.relight.train import train

    data = tmp_path / "data"
    shutil.copytree(tiny_scene, data)
    test = json.loads((data / "transforms_test.json").read_text())
    del test["envmaps"]
    test["frames"][1]["light"] = "sunset.exr"
    (data / "transforms_test.json").write_text(json.dumps(test))
    run = tmp_path / "run"
    train(data, run, RelightConfig(steps=1, lobes=4, batch_rays=32, sdf_width=16, albedo_width=16), quiet=True)
    before = (run / "checkpoint.pt").read_bytes()
    test["frames"][0]["light"] = "sunset.exr"
    (data / "transforms_test.json").write_text(json.dumps(test))
    line = cli_error(["relight", "eval", str(run), "--data", str(data), "--split", "test", "--device", "cpu"])
    assert line == f"physinv: error: transforms_test.json: frames[0].light: 'sunset.exr' names no map: not an envmaps entry and no file {data / 'sunset.exr'}"
    assert (run / "checkpoint.pt").read_bytes() == before and not (run / "metrics.json").exists()


def test_light_not_in_envmaps_is_caught_on_read(tiny_scene, tmp_path):
    from physinv.errors import PhysinvError
    from physinv.io.transforms import read_transforms

    data = tmp_path / "data"
    shutil.copytree(tiny_scene, data)
    train = json.loads((data / "transforms_train.json").read_text())
    train["frames"][2]["light"] = "nope"
    (data / "transforms_train.json").write_text(json.dumps(train))
    with pytest.raises(PhysinvError, match=r"transforms_train.json: frames\[2\].light: 'nope' is not in envmaps \(sky0\) nor an .exr/.hdr file in"):
        read_transforms(data / "transforms_train.json")


def test_bad_envmap_to_world(tiny_scene, tmp_path):
    from physinv.errors import PhysinvError
    from physinv.io.transforms import read_transforms

    data = tmp_path / "data"
    shutil.copytree(tiny_scene, data)
    path = data / "transforms_train.json"
    train = json.loads(path.read_text())
    assert np.allclose(np.asarray(train["envmap_to_world"])[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])  # synth writes it
    train["envmap_to_world"] = [[2.0, 0, 0], [0, 1, 0], [0, 0, 1]]
    path.write_text(json.dumps(train))
    with pytest.raises(PhysinvError, match="transforms_train.json: envmap_to_world: its 3x3 part must be a rotation"):
        read_transforms(path)
    train["envmap_to_world"] = [[1, 0], [0, 1]]
    path.write_text(json.dumps(train))
    with pytest.raises(PhysinvError, match="envmap_to_world: expected a 3x3 or 4x4 matrix"):
        read_transforms(path)


def test_edit_needs_an_edit(tmp_path, cli_error):
    line = cli_error(["relight", "edit", str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert line == "physinv: error: relight edit: give at least one of --albedo, --roughness, --specular, --metallic"


def test_unknown_config_key_and_preset(tiny_scene, tmp_path, cli_error):
    toml = tmp_path / "fit.toml"
    toml.write_text("lobse = 24\n")
    line = cli_error(["relight", "fit", str(tiny_scene), "--out", str(tmp_path / "run"), "--config", str(toml), "--device", "cpu"])
    assert line.startswith(f"physinv: error: {toml}: lobse: unknown key (known keys: albedo_depth")
    line = cli_error(["relight", "fit", str(tiny_scene), "--out", str(tmp_path / "run"), "--preset", "huge", "--device", "cpu"])
    assert line == "physinv: error: preset: unknown preset 'huge' (known: full, small)"
    assert not (tmp_path / "run").exists()
