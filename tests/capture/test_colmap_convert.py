"""COLMAP model <-> transforms.json: axis conversion on hand-built poses, binary and text models,
per-camera intrinsics and distortion, bad input."""

import json

import numpy as np
import pytest
import torch

from physinv.core.camera import look_at, project
from physinv.io.colmap import c2w_to_colmap, camera_from_colmap, colmap_to_c2w, read_reconstruction, reconstruction_to_transforms, transforms_to_reconstruction
from physinv.io.images import write_image
from physinv.io.transforms import Frame, Transforms, read_transforms


def test_axis_conversion_on_hand_built_pose():
    # a COLMAP camera at world (0, -3, 0) looking along +y (OpenCV: +z forward, +y down = world -z)
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # rows: camera x, y, z axes in world coordinates
    centre = np.array([0.0, -3.0, 0.0])
    t = -R @ centre
    c2w = colmap_to_c2w(R, t)
    assert np.allclose(c2w[:3, 3], centre)
    assert np.allclose(-c2w[:3, 2], [0, 1, 0])  # OpenGL looks along -z: world +y
    assert np.allclose(c2w[:3, 1], [0, 0, 1])  # OpenGL up: world +z (COLMAP's +y is down)
    # the same camera as physinv's own look_at
    assert np.allclose(c2w, look_at(torch.tensor(centre), torch.zeros(3, dtype=torch.float64)).numpy(), atol=1e-12)
    R2, t2 = c2w_to_colmap(c2w)
    assert np.allclose(R2, R) and np.allclose(t2, t)


def test_a_point_projects_to_the_same_pixel_in_colmap_and_physinv():
    import pycolmap

    rng = np.random.default_rng(0)
    c2w = look_at(torch.tensor([1.0, -2.5, 1.2], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)).numpy()
    R, t = c2w_to_colmap(c2w)
    cam = pycolmap.Camera(model="OPENCV", width=40, height=30, params=[45.0, 47.0, 19.5, 15.2, -0.1, 0.02, 0.001, -0.002], camera_id=1)
    intr, dist = camera_from_colmap("OPENCV", cam.params)
    pts = rng.uniform(-0.4, 0.4, (30, 3))
    ours, _ = project(torch.tensor(pts), torch.tensor(c2w), torch.tensor(intr), torch.tensor(dist))
    cam_pts = pts @ R.T + t
    ref = cam.img_from_cam(cam_pts)  # COLMAP's own projection (pixel centres at +0.5 as physinv)
    assert np.abs(ours.numpy() - ref[:, :2]).max() < 1e-6


@pytest.mark.parametrize("model,params,intr,dist", [
    ("SIMPLE_PINHOLE", [50, 16, 12], [50, 50, 16, 12], None),
    ("PINHOLE", [50, 52, 16, 12], [50, 52, 16, 12], None),
    ("SIMPLE_RADIAL", [50, 16, 12, 0.1], [50, 50, 16, 12], [0.1, 0, 0, 0, 0, 0]),
    ("RADIAL", [50, 16, 12, 0.1, -0.02], [50, 50, 16, 12], [0.1, -0.02, 0, 0, 0, 0]),
    ("OPENCV", [50, 52, 16, 12, 0.1, -0.02, 0.001, 0.002], [50, 52, 16, 12], [0.1, -0.02, 0, 0, 0.001, 0.002]),
])
def test_camera_models(model, params, intr, dist):
    i, d = camera_from_colmap(model, params)
    assert np.allclose(i, intr)
    assert (d is None and dist is None) or np.allclose(d, dist)


def test_unsupported_camera_model_is_one_line():
    with pytest.raises(ValueError, match=r"cameras: OPENCV_FISHEYE: camera model not supported"):
        camera_from_colmap("OPENCV_FISHEYE", [50, 50, 16, 12, 0, 0, 0, 0])


def _hand_built(tmp_path, n=4):
    """n cameras on a circle, two different cameras (one distorted), tiny PNGs."""
    images = tmp_path / "photos"
    frames = []
    for i in range(n):
        ang = 2 * np.pi * i / n
        eye = torch.tensor([3 * np.cos(ang), 3 * np.sin(ang), 1.0], dtype=torch.float64)
        c2w = look_at(eye, torch.zeros(3, dtype=torch.float64)).numpy()
        path = write_image(images / f"im{i:02d}.png", np.full((24, 32, 3), i / n))
        dist = np.array([-0.1, 0.01, 0, 0, 0.001, 0]) if i % 2 else None
        frames.append(Frame(path, c2w, np.array([40.0 + i, 41.0 + i, 16.0, 12.0]), 32, 24, {}, dist))
    return images, Transforms(tmp_path / "t.json", frames, {})


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_model_round_trip_binary_and_text(tmp_path, fmt):
    images, truth = _hand_built(tmp_path)
    rec = transforms_to_reconstruction(truth)
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    rec.write_binary(str(model)) if fmt == "bin" else rec.write_text(str(model))
    assert (model / f"cameras.{fmt}").is_file()
    back, points = reconstruction_to_transforms(read_reconstruction(tmp_path), images, tmp_path / "out.json")  # finds sparse/0
    assert len(back.frames) == 4 and points.shape == (0, 3)
    for a, b in zip(truth.frames, back.frames):
        assert a.image_path.name == b.image_path.name
        assert np.allclose(a.c2w, b.c2w, atol=1e-9)
        assert np.allclose(a.intrinsics, b.intrinsics)  # per-camera intrinsics kept
        assert (a.distortion is None) == (b.distortion is None)
        if a.distortion is not None:
            assert np.allclose(a.distortion, b.distortion)


def test_from_colmap_cli_writes_transforms(tmp_path):
    from physinv.cli import main

    images, truth = _hand_built(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    transforms_to_reconstruction(truth).write_text(str(model))
    out = tmp_path / "scene"
    with pytest.raises(SystemExit) as exc:
        main(["data", "from-colmap", str(model), "--images", str(images), "--out", str(out), "--no-normalize", "--quiet"])
    assert exc.value.code == 0
    data = json.loads((out / "transforms.json").read_text())
    assert data["frames"][1]["k1"] == pytest.approx(-0.1) and "k1" not in data["frames"][0]
    t = read_transforms(out / "transforms.json")
    assert np.allclose(t.frames[2].c2w, truth.frames[2].c2w) and np.allclose(t.frames[3].intrinsics, truth.frames[3].intrinsics)
    assert np.allclose(t.frames[1].distortion, truth.frames[1].distortion)
    from physinv.io.dataset import load_views

    views = load_views(out)
    assert views.distortion is not None and torch.allclose(views.distortion[0], torch.zeros(6))


def test_missing_image_is_one_line_exit_2(tmp_path, cli_error):
    images, truth = _hand_built(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    transforms_to_reconstruction(truth).write_binary(str(model))
    (images / "im02.png").unlink()
    line = cli_error(["data", "from-colmap", str(model), "--images", str(images), "--out", str(tmp_path / "o"), "--quiet"])
    assert line.endswith("im02.png: image not found (the COLMAP model names 'im02.png'; pass the photo folder with --images)")
    line = cli_error(["data", "from-colmap", str(tmp_path / "nothing"), "--images", str(images), "--out", str(tmp_path / "o")])
    assert line.endswith("nothing: COLMAP model folder not found")
    line = cli_error(["data", "from-colmap", str(images), "--images", str(images), "--out", str(tmp_path / "o")])
    assert "no COLMAP model here" in line


def test_undistort_resize_and_points_normalised(tmp_path):
    """--undistort writes pinhole frames; --max-size scales the intrinsics with the image; the sparse
    points are written normalised with the cameras (the aabb holds them) and map back exactly."""
    from physinv.capture.normalize import Normalization, read_points
    from physinv.capture.scene import CaptureConfig
    from physinv.capture.sfm import from_colmap

    images, truth = _hand_built(tmp_path)
    rec = transforms_to_reconstruction(truth)
    rng = np.random.default_rng(0)
    import pycolmap

    pts = rng.uniform(-0.5, 0.5, (60, 3)) + [0.2, 0.1, 0.0]
    for p in pts:
        rec.add_point3D(p, pycolmap.Track())
    model = tmp_path / "model"
    model.mkdir()
    rec.write_binary(str(model))
    out = tmp_path / "scene"
    summary = from_colmap(model, images, out, CaptureConfig(undistort=True, max_size=16), quiet=True)
    assert summary["roi"] == "points"
    t = read_transforms(out / "transforms.json")
    assert all(f.distortion is None for f in t.frames)
    assert (t.frames[0].width, t.frames[0].height) == (16, 12)
    assert np.allclose(t.frames[0].intrinsics, truth.frames[0].intrinsics * 0.5)  # undistorted only frames 1, 3
    assert t.frames[1].intrinsics[0] < 0.5 * truth.frames[1].intrinsics[0]  # barrel lens: wider pinhole
    norm = Normalization.from_json(t.extras["normalization"])
    back = read_points(out / "sparse_pc.ply")
    def rows(a):  # the model's point order is its own
        return a[np.lexsort(a.T)]

    assert np.allclose(rows(norm.invert(back)), rows(pts), atol=1e-5)
    assert np.abs(back).max() < 1.0
    assert np.allclose(norm.apply(truth.frames[2].c2w[:3, 3]), t.frames[2].c2w[:3, 3])
