"""``physinv view`` on a relighting run: every output the drop-down offers renders, and the frame
is the run's own render (linear radiance shown sRGB-encoded, normals as colours on hit pixels)."""

import math

import numpy as np
import torch

from physinv.core.camera import look_at
from physinv.io.images import linear_to_srgb
from physinv.relight.config import RelightConfig
from physinv.relight.train import train
from physinv.view import RELIGHT_MODES, c2w_to_viewer, load_viewable, preview_intrinsics, render_for_camera, to_uint8


def test_relight_run_frames(tiny_scene, tmp_path):
    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    train(tiny_scene, run_dir, RelightConfig(steps=2, lobes=4, batch_rays=32, sdf_width=16, albedo_width=16), quiet=True)
    viewable = load_viewable(run_dir)
    assert viewable.kind == "relight" and viewable.modes == RELIGHT_MODES
    c2w = look_at(torch.tensor([2.5, -1.5, 1.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    wxyz, pos = c2w_to_viewer(c2w.numpy())
    K, w, h = preview_intrinsics(math.radians(40), 1.0, 16)
    out = viewable.run.render_image(c2w, K, w, h)
    assert out["hit"].any() and not out["hit"].all()
    frames = {m: render_for_camera(viewable, wxyz, pos, math.radians(40), 1.0, 16, m) for m in RELIGHT_MODES}
    assert all(f.shape == (16, 16, 3) and f.dtype == np.uint8 for f in frames.values())
    assert np.array_equal(frames["rgb"], to_uint8(linear_to_srgb(out["rgb"].clamp(min=0))))
    assert np.array_equal(frames["normal"][~out["hit"].numpy()], np.zeros(((~out["hit"]).sum().item(), 3), np.uint8))
    assert np.array_equal(frames["normal"], to_uint8(0.5 * (out["normal"] + 1) * out["hit"].unsqueeze(-1).float()))


def test_relight_run_relit_under_a_map(tiny_scene, tmp_path, cli_error):
    """``--envmap``: the extra ``relit`` mode renders under the SG light fitted to the map, and a
    brighter map gives a brighter frame."""
    from physinv.io.hdr import write_hdr

    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    train(tiny_scene, run_dir, RelightConfig(steps=2, lobes=4, batch_rays=32, sdf_width=16, albedo_width=16), quiet=True)
    dim, bright = tmp_path / "dim.exr", tmp_path / "bright.exr"
    write_hdr(dim, np.full((8, 16, 3), 0.2, np.float32))
    write_hdr(bright, np.full((8, 16, 3), 2.0, np.float32))
    c2w = look_at(torch.tensor([2.5, -1.5, 1.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    wxyz, pos = c2w_to_viewer(c2w.numpy())
    frames = []
    for path in (dim, bright):
        viewable = load_viewable(run_dir, envmap=path)
        assert viewable.modes[-1] == "relit"
        frames.append(render_for_camera(viewable, wxyz, pos, math.radians(40), 1.0, 16, "relit").astype(float))
    assert frames[1].mean() > frames[0].mean() + 10
    line = cli_error(["view", str(run_dir), "--envmap", str(tmp_path / "none.exr")])
    assert "none.exr" in line
