"""The sequence layout: synth output, loader round trip, the rasterizer against Mitsuba's frames,
and one-line errors (exit 2) for broken input."""

from __future__ import annotations

import json

import numpy as np
import torch

from physinv.io.images import write_image
from physinv.sft.data import load_ground_truth, load_sequence, write_obj

torch.set_num_threads(1)


def test_synth_writes_the_layout(tiny_sequence):
    root = tiny_sequence
    for sub, ext in (("frames", "png"), ("masks", "png"), ("depth", "npy"), ("gt_points", "npy"), ("gt_meshes", "obj")):
        assert sorted(p.name for p in (root / sub).iterdir()) == [f"{i:04d}.{ext}" for i in range(8)]
    cam = json.loads((root / "camera.json").read_text())
    assert {"width", "height", "fx", "fy", "cx", "cy", "world_to_camera"} <= set(cam)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["fps"] == 30.0 and len(meta["handles"]) == 2
    seq = load_sequence(root)
    assert seq.frames.shape == (8, 48, 48, 3) and seq.masks.shape == (8, 48, 48)
    assert seq.vertices.shape == (25, 3) and seq.uvs.shape == (25, 2)
    # the template is the ground truth's frame 0 (on its finer grid) and the cloth does move
    gt0, gt7 = load_ground_truth(root, 0), load_ground_truth(root, 7)
    assert gt0.shape == (10000, 3)
    assert np.abs(gt0[:, 2]).max() < 1e-12  # frame 0 is the flat template
    assert torch.cdist(seq.vertices, torch.from_numpy(gt0)).min(1).values.max() < 0.01
    assert np.abs(gt7 - gt0).max() > 0.05
    # the depth map is z-depth where the mask is set
    depth = np.load(root / "depth" / "0003.npy")
    assert ((depth > 0) == (seq.masks[3].numpy() > 0)).mean() > 0.99


def test_rasterizer_reproduces_mitsuba_frame(tiny_sequence):
    """Frame 0 re-rendered by the soft rasterizer (template + texture, hard limit) matches the
    Mitsuba frame: same silhouette, and the colours agree up to ambient occlusion and aliasing."""
    from physinv.core.raster import rasterize

    seq = load_sequence(tiny_sequence)
    out = rasterize(seq.vertices, seq.faces, seq.world_to_camera, seq.intrinsics, 48, 48, uvs=seq.uvs, texture=seq.texture.double(), hard=True)
    mask = seq.masks[0] > 0
    ours = out.alpha > 0.5
    assert (ours & mask).sum() / (ours | mask).sum() >= 0.95
    inner = ours & mask
    err = (out.rgb[inner].float() - seq.frames[0][inner]).abs().mean()
    assert err < 0.08


def test_obj_round_trip_keeps_uvs(tmp_path):
    from physinv.sft.cloth import grid_cloth
    from physinv.sft.data import load_template

    v, f, uv = grid_cloth(4, 0.3)
    write_obj(tmp_path / "t.obj", v.numpy(), f.numpy(), uv.numpy())
    v2, f2, uv2 = load_template(tmp_path / "t.obj")
    torch.testing.assert_close(v2, v)
    torch.testing.assert_close(f2, f)
    torch.testing.assert_close(uv2, uv)


def _fit_error(cli_error, root, tmp_path) -> str:
    return cli_error(["sft", "fit", str(root), "--out", str(tmp_path / "run"), "--steps", "1", "--quiet"])


def test_template_without_uvs(sequence_copy, cli_error, tmp_path):
    seq = load_sequence(sequence_copy)
    write_obj(sequence_copy / "template.obj", seq.vertices.numpy(), seq.faces.numpy(), None)
    line = _fit_error(cli_error, sequence_copy, tmp_path)
    assert line == f"physinv: error: {sequence_copy / 'template.obj'}: vt: the template has no texture coordinates (UVs); φ-SfT needs them to texture the mesh"
    assert not (tmp_path / "run").exists()


def test_masks_of_another_size(sequence_copy, cli_error, tmp_path):
    write_image(sequence_copy / "masks" / "0002.png", np.zeros((32, 40), np.uint8))
    line = _fit_error(cli_error, sequence_copy, tmp_path)
    assert line == f"physinv: error: {sequence_copy / 'masks' / '0002.png'}: size 40x32 differs from the frames' 48x48"


def test_missing_frame(sequence_copy, cli_error, tmp_path):
    (sequence_copy / "frames" / "0003.png").unlink()
    line = _fit_error(cli_error, sequence_copy, tmp_path)
    assert line == f"physinv: error: {sequence_copy / 'frames' / '0003.png'}: missing (frames are numbered 0000..0007 without gaps)"


def test_non_manifold_template(sequence_copy, cli_error, tmp_path):
    seq = load_sequence(sequence_copy)
    v = np.concatenate([seq.vertices.numpy(), [[0.0, 0.0, 0.2]]])
    uv = np.concatenate([seq.uvs.numpy(), [[0.5, 0.5]]])
    from physinv.sft.cloth import _interior_edges

    a, b = _interior_edges(seq.faces)[0][0, :2].tolist()  # an edge already shared by two faces
    f = np.concatenate([seq.faces.numpy(), [[b, a, 25]]])
    write_obj(sequence_copy / "template.obj", v, f, uv)
    line = _fit_error(cli_error, sequence_copy, tmp_path)
    assert line.startswith(f"physinv: error: {sequence_copy / 'template.obj'}: non-manifold: edge (")
    assert line.endswith("is shared by more than two faces")


def test_flipped_template(sequence_copy, cli_error, tmp_path):
    seq = load_sequence(sequence_copy)
    f = seq.faces.numpy().copy()
    f[5] = f[5][::-1]
    write_obj(sequence_copy / "template.obj", seq.vertices.numpy(), f, seq.uvs.numpy())
    line = _fit_error(cli_error, sequence_copy, tmp_path)
    assert line.startswith(f"physinv: error: {sequence_copy / 'template.obj'}: flipped face: faces ")
    assert "inconsistent orientation" in line


def test_bad_camera_field(sequence_copy, cli_error, tmp_path):
    cam = json.loads((sequence_copy / "camera.json").read_text())
    del cam["fx"]
    (sequence_copy / "camera.json").write_text(json.dumps(cam))
    line = _fit_error(cli_error, sequence_copy, tmp_path)
    assert line == f"physinv: error: {sequence_copy / 'camera.json'}: fx: missing"
