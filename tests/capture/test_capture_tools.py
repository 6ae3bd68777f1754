"""Undistort-once against OpenCV, normalisation (unit cube / sphere, recorded and invertible), masks."""

import json

import cv2
import numpy as np
import pytest
import torch

from physinv.capture.masks import colour_key_mask, find_mask, grabcut_mask
from physinv.capture.normalize import Normalization, fit_normalization, region_of_interest
from physinv.capture.undistort import undistort_image, undistorted_intrinsics
from physinv.core.camera import look_at, orbit_poses


def test_undistort_image_matches_opencv_remap():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.uniform(0, 1, (48, 64, 3)).astype(np.float32), (5, 5), 1.5)
    K = np.array([60.0, 61.0, 32.4, 23.8])
    dist = np.array([-0.25, 0.07, -0.01, 0.0, 0.001, -0.0005])  # (k1, k2, k3, k4, p1, p2)
    ours, new_k = undistort_image(image, K, dist)
    # OpenCV's pixel centres are at integers: shift the principal points by half a pixel
    Kcv = np.array([[K[0], 0, K[2] - 0.5], [0, K[1], K[3] - 0.5], [0, 0, 1]])
    Ncv = np.array([[new_k[0], 0, new_k[2] - 0.5], [0, new_k[1], new_k[3] - 0.5], [0, 0, 1]])
    mx, my = cv2.initUndistortRectifyMap(Kcv, np.array([-0.25, 0.07, 0.001, -0.0005, -0.01]), None, Ncv, (64, 48), cv2.CV_32FC1)
    ref = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(ours - ref).max() < 2e-3
    # barrel distortion: the pinhole image zooms out (smaller focal length) yet every pixel sees the photo
    assert new_k[0] < K[0] and np.allclose(new_k[2:], K[2:])
    assert np.all((mx >= -1e-4) & (mx <= 63 + 1e-4) & (my >= -1e-4) & (my <= 47 + 1e-4))
    # the smallest such focal length: 1 % less and a border pixel falls outside the photo
    mx2, my2 = cv2.initUndistortRectifyMap(Kcv, np.array([-0.25, 0.07, 0.001, -0.0005, -0.01]), None, Ncv * [[0.99], [0.99], [1]], (64, 48), cv2.CV_32FC1)
    assert not np.all((mx2 >= 0) & (mx2 <= 63) & (my2 >= 0) & (my2 <= 47))
    assert np.allclose(undistorted_intrinsics(K, np.zeros(6), 64, 48), K, rtol=1e-6)  # no distortion: unchanged


def test_normalization_puts_points_in_unit_cube_and_inverts():
    rng = np.random.default_rng(1)
    pts = rng.uniform([2, -1, 5], [4, 3, 6], (500, 3))
    pts[:5] = 1e3  # outliers the percentile box ignores
    c2w = orbit_poses(8, 10.0, 20.0).numpy()
    centre, half, source = region_of_interest(c2w, pts, "auto")
    assert source == "points"
    norm = fit_normalization(centre, half, "cube")
    inner = norm.apply(pts[5:])
    assert np.abs(inner).max() < 1.0 and np.abs(inner).max() > 0.75  # inside the cube, filling most of it
    assert np.allclose(norm.invert(norm.apply(pts)), pts)
    sphere = fit_normalization(centre, half, "sphere")
    assert np.linalg.norm(sphere.apply(centre + half)) == pytest.approx(1.0)
    a, b = Normalization(2.0, (1.0, 0.0, 0.0)), Normalization(0.5, (0.0, 1.0, 0.0))
    assert np.allclose(a.then(b).apply(pts), b.apply(a.apply(pts)))


def test_cameras_roi_is_the_look_at_point():
    target = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    c2w = orbit_poses(6, 4.0, 30.0, target=target).numpy()
    centre, half, source = region_of_interest(c2w, None, "auto")
    assert source == "cameras" and np.allclose(centre, target.numpy()) and np.allclose(half, 2.0)


def test_normalize_command_rewrites_every_split(tmp_path, tiny_scene):
    import shutil

    from physinv.cli import main
    from physinv.io.transforms import read_transforms

    data = tmp_path / "d"
    shutil.copytree(tiny_scene, data)
    before = read_transforms(data / "transforms_train.json")
    with pytest.raises(SystemExit) as exc:
        main(["data", "normalize", str(data), "--roi", "cameras"])
    assert exc.value.code == 0
    for split in ("train", "test"):
        t = read_transforms(data / f"transforms_{split}.json")
        assert t.extras["aabb"] == [[-1.0] * 3, [1.0] * 3]
    after = read_transforms(data / "transforms_train.json")
    norm = Normalization.from_json(after.extras["normalization"])
    assert np.allclose(norm.apply(before.frames[3].c2w[:3, 3]), after.frames[3].c2w[:3, 3])
    assert np.allclose(before.frames[3].c2w[:3, :3], after.frames[3].c2w[:3, :3])
    # cameras 1 unit from the centre, i.e. half the median distance maps to 1
    assert np.median([np.linalg.norm(f.c2w[:3, 3]) for f in after.frames]) == pytest.approx(2.0, rel=1e-6)


def test_colour_key_and_grabcut_find_the_object():
    rng = np.random.default_rng(2)
    img = np.full((48, 48, 3), [0.1, 0.6, 0.2], np.float32) + rng.normal(0, 0.01, (48, 48, 3)).astype(np.float32)
    yy, xx = np.mgrid[:48, :48]
    obj = (xx - 24) ** 2 + (yy - 22) ** 2 < 12**2
    img[obj] = [0.8, 0.3, 0.3]
    img[obj & (xx > 24)] = [0.7, 0.7, 0.1]  # two-tone object
    for m in (colour_key_mask(img), grabcut_mask(img)):
        iou = (m.astype(bool) & obj).sum() / (m.astype(bool) | obj).sum()
        assert iou > 0.95


def test_masks_become_alpha_and_missing_mask_is_one_line(tmp_path, cli_error):
    from physinv.io.colmap import transforms_to_reconstruction
    from physinv.io.images import read_image, write_image
    from physinv.io.transforms import Frame, Transforms
    from physinv.cli import main

    photos, masks, model = tmp_path / "p", tmp_path / "m", tmp_path / "model"
    frames = []
    for i in range(3):
        path = write_image(photos / f"v{i}.jpg", np.full((16, 16, 3), 0.5))
        write_image(masks / f"v{i}.png", (np.arange(16)[None, :] >= 8).repeat(16, 0).astype(np.float32))
        eye = torch.tensor([3.0 * np.cos(i), 3.0 * np.sin(i), 1.0], dtype=torch.float64)
        frames.append(Frame(path, look_at(eye, torch.zeros(3, dtype=torch.float64)).numpy(), np.array([20.0, 20, 8, 8]), 16, 16))
    model.mkdir()
    transforms_to_reconstruction(Transforms(tmp_path / "t.json", frames)).write_text(str(model))
    out = tmp_path / "scene"
    with pytest.raises(SystemExit):
        main(["data", "from-colmap", str(model), "--images", str(photos), "--out", str(out), "--masks", str(masks), "--quiet", "--test-every", "3", "--background", "0.5,0.5,0.5"])
    data = json.loads((out / "transforms_train.json").read_text())
    assert len(data["frames"]) == 2 and len(json.loads((out / "transforms_test.json").read_text())["frames"]) == 1
    rgba = read_image(out / data["frames"][0]["file_path"])
    assert rgba.shape == (16, 16, 4) and rgba[..., 3][:, :8].max() == 0 and rgba[..., 3][:, 8:].min() == 1
    assert data["frames"][0]["mask_path"].endswith("masks/v0.png") and data["background"] == [0.5, 0.5, 0.5]
    line = cli_error(["data", "from-colmap", str(model), "--images", str(photos), "--out", str(tmp_path / "o"), "--background", "2,0,0"])
    assert line == "physinv: error: --background: expected r,g,b in [0, 1], got [2.0, 0.0, 0.0]"
    (masks / "v1.png").unlink()
    line = cli_error(["data", "from-colmap", str(model), "--images", str(photos), "--out", str(tmp_path / "o"), "--masks", str(masks), "--quiet"])
    assert line.endswith("v1.png: mask not found for image 'v1.jpg' (--masks)")
    assert find_mask(masks, "v0.jpg").name == "v0.png"


def test_mask_command(tmp_path, cli_error, capsys):
    from physinv.cli import main
    from physinv.io.images import read_image, write_image

    photos = tmp_path / "p"
    yy, xx = np.mgrid[:32, :32]
    disc = (xx - 16) ** 2 + (yy - 16) ** 2 < 8**2
    for i in range(2):
        img = np.full((32, 32, 3), [0.2, 0.7, 0.3], np.float32)
        img[disc] = [0.9, 0.2, 0.6]
        write_image(photos / f"{i}.png", img)
    with pytest.raises(SystemExit) as exc:
        main(["data", "mask", str(photos), "--out", str(tmp_path / "m"), "--method", "grabcut", "--key", "0.2,0.7,0.3"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["masks"] == 2
    assert np.array_equal(read_image(tmp_path / "m" / "1.png")[..., 0] > 0.5, disc)
    line = cli_error(["data", "mask", str(photos), "--out", str(tmp_path / "m"), "--key", "green"])
    assert line == "physinv: error: --key: expected r,g,b (three numbers in [0, 1]), got 'green'"
