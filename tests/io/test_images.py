"""Images: RGBA compositing, 8/16-bit round trips, label images, sRGB, HDR (.exr, .hdr), meshes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physinv.errors import PhysinvError
from physinv.io.hdr import read_hdr, write_hdr
from physinv.io.images import composite, linear_to_srgb, read_image, read_labels, srgb_to_linear, write_image
from physinv.io.mesh import load_mesh, save_mesh


def test_composite_straight_alpha_numpy_and_torch():
    rgba = np.array([[[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.25], [0.2, 0.4, 0.6, 0.0]]], dtype=np.float32)
    bg = [0.0, 0.0, 1.0]
    expected = np.array([[[1.0, 0.0, 0.0], [0.25, 0.0, 0.75], [0.0, 0.0, 1.0]]], dtype=np.float32)
    np.testing.assert_allclose(composite(rgba, bg), expected, atol=1e-7)
    out = composite(torch.from_numpy(rgba).double(), torch.tensor(bg))
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-7)
    rgb = rgba[..., :3]
    assert composite(rgb, bg) is rgb  # already RGB: unchanged


def test_rgba_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((7, 9, 4)).astype(np.float32)
    write_image(tmp_path / "a.png", image)
    back = read_image(tmp_path / "a.png")
    assert back.shape == (7, 9, 4) and back.dtype == np.float32
    assert np.abs(back - image).max() <= 0.5 / 255 + 1e-6
    write_image(tmp_path / "b.png", image[..., :3], bits=16)
    assert np.abs(read_image(tmp_path / "b.png") - image[..., :3]).max() <= 0.5 / 65535 + 1e-7
    write_image(tmp_path / "g.png", image[..., 0])
    assert read_image(tmp_path / "g.png").shape == (7, 9, 1)


def test_labels_are_not_scaled(tmp_path):
    labels = np.array([[0, 1, 2], [3, 1000, 65535]], dtype=np.uint16)
    write_image(tmp_path / "ids.png", labels)
    back = read_labels(tmp_path / "ids.png")
    assert back.dtype == np.int64 and (back == labels).all()


def test_srgb_round_trip_and_known_values():
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    assert abs(float(linear_to_srgb(np.array(0.5))) - 0.7353569830524495) < 1e-9
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    np.testing.assert_allclose(linear_to_srgb(t).numpy(), linear_to_srgb(t.numpy()), atol=1e-12)


def test_missing_image_is_named(tmp_path):
    with pytest.raises(PhysinvError, match=r"nope.png: image not found$"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(PhysinvError, match=r"bad.png: cannot read image"):
        read_image(tmp_path / "bad.png")


def test_hdr_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    env = (rng.random((16, 32, 3)) ** 3 * 200).astype(np.float32) + 1e-3  # 5 decades of radiance
    write_hdr(tmp_path / "env.exr", env)
    np.testing.assert_array_equal(read_hdr(tmp_path / "env.exr"), env)  # float32 EXR: exact
    write_hdr(tmp_path / "env.hdr", env)
    back = read_hdr(tmp_path / "env.hdr")
    assert back.shape == env.shape and back.dtype == np.float32
    # RGBE: a shared 8-bit exponent, so each channel is exact to 1/256 of the pixel's largest channel
    err = np.abs(back - env) / env.max(-1, keepdims=True)
    assert err.max() < 1.0 / 128
    assert read_image(tmp_path / "env.exr").shape == (16, 32, 3)  # read_image delegates HDR files


def test_hdr_bad_input(tmp_path):
    with pytest.raises(PhysinvError, match="not an HDR image"):
        read_hdr(tmp_path / "env.png")
    with pytest.raises(PhysinvError, match=r"env.exr: HDR image not found"):
        read_hdr(tmp_path / "env.exr")
    (tmp_path / "junk.exr").write_bytes(b"\x00" * 64)
    with pytest.raises(PhysinvError, match=r"junk.exr: cannot read HDR image"):
        read_hdr(tmp_path / "junk.exr")


@pytest.mark.parametrize("ext", [".ply", ".obj"])
def test_mesh_round_trip(tmp_path, ext):
    vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    save_mesh(tmp_path / f"tet{ext}", vertices, faces)
    mesh = load_mesh(tmp_path / f"tet{ext}")
    np.testing.assert_allclose(mesh.vertices, vertices.numpy(), atol=1e-6)
    assert (mesh.faces == faces.numpy()).all()
    assert abs(mesh.volume - 1 / 6) < 1e-6  # closed, outward-facing
    with pytest.raises(PhysinvError, match="mesh file not found"):
        load_mesh(tmp_path / "none.obj")
