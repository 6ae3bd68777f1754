"""Instance-NeRF end to end on the tiny scene: the field along a frozen NeRF, eval, render, query; bad input."""

import shutil

import numpy as np
import torch

from physinv.io.images import write_image


def test_field_on_consistent_masks_segments_novel_views(instance_nerf, tiny_scene, gt_masks, tmp_path, run_cli):
    """The instance field alone (``--direct``: no detector) trained on noise-free, consistent masks
    segments the held-out views; the trivial all-background answer scores PQ 0."""
    out = tmp_path / "inst"
    fit = run_cli(["instance", "fit", instance_nerf, "--data", tiny_scene, "--masks", gt_masks, "--out", out, "--direct",
                   "--steps", "150", "--device", "cpu", "--quiet"])
    assert fit["instances"] == 3 and fit["steps"] == 150
    m = run_cli(["instance", "eval", out, "--device", "cpu"])
    assert m["views"] == 2 and m["pq"] > 0.6 and m["miou"] > 0.6, m
    r = run_cli(["instance", "render", out, "--out", tmp_path / "render", "--device", "cpu"])
    assert r["views"] == 2 and (tmp_path / "render" / "ids_000.png").is_file()

    from physinv.instance.pipeline import load_instance_run

    run = load_instance_run(out)
    ids, prob = run.query(torch.tensor([[0.45, -0.35, 0.0], [0.9, 0.9, 0.9]]))  # the sphere's centre; empty corner
    assert ids[1] == 0 and prob[1] == 1.0
    assert 0.0 < prob[0] <= 1.0


def test_smoothness_matching_options_are_checked(instance_nerf, tiny_scene, gt_masks, tmp_path, cli_error):
    msg = cli_error(["instance", "fit", str(instance_nerf), "--data", str(tiny_scene), "--masks", str(gt_masks), "--out",
                     str(tmp_path / "o"), "--matching", "best"])
    assert msg == "physinv: error: --matching: expected greedy or hungarian, got 'best'"


def test_not_a_nerf_run_is_one_line(tiny_scene, gt_masks, tmp_path, cli_error):
    folder = tmp_path / "nothing"
    folder.mkdir()
    msg = cli_error(["instance", "fit", str(folder), "--data", str(tiny_scene), "--masks", str(gt_masks), "--out", str(tmp_path / "o")])
    assert msg == f"physinv: error: {folder}: not a physinv nerf run (no checkpoint.pt; train one with `physinv nerf train`)"


def test_mask_of_the_wrong_size_is_one_line(instance_nerf, tiny_scene, gt_masks, tmp_path, cli_error):
    masks = tmp_path / "masks"
    shutil.copytree(gt_masks, masks)
    write_image(masks / "r_003.png", np.zeros((16, 16), np.uint16))
    msg = cli_error(["instance", "fit", str(instance_nerf), "--data", str(tiny_scene), "--masks", str(masks), "--out", str(tmp_path / "o")])
    assert msg == f"physinv: error: {masks / 'r_003.png'}: mask is 16x16 but its view r_003.png is 32x32"


def test_masks_folder_missing_views_is_one_line(instance_nerf, tiny_scene, gt_masks, tmp_path, cli_error):
    masks = tmp_path / "masks"
    shutil.copytree(gt_masks, masks)
    (masks / "r_002.png").unlink()
    (masks / "r_005.png").unlink()
    msg = cli_error(["instance", "fit", str(instance_nerf), "--data", str(tiny_scene), "--masks", str(masks), "--out", str(tmp_path / "o")])
    assert msg == f"physinv: error: {masks}: no mask for 2 of 8 views: r_002.png, r_005.png"
    assert not (tmp_path / "o").exists()  # nothing written


def test_viewer_shows_instance_runs(instance_nerf, tiny_scene, gt_masks, tmp_path, run_cli):
    """``physinv view`` on an instance run: the ``instances`` frame is the run's label render in the
    instance palette, ``rgb`` the NeRF's render."""
    import math

    from physinv.core.camera import look_at
    from physinv.instance.export import palette
    from physinv.view import INSTANCE_MODES, c2w_to_viewer, load_viewable, preview_intrinsics, render_for_camera, to_uint8

    out = tmp_path / "inst"
    run_cli(["instance", "fit", instance_nerf, "--data", tiny_scene, "--masks", gt_masks, "--out", out, "--direct", "--steps", "5", "--device", "cpu", "--quiet"])
    viewable = load_viewable(out)
    assert viewable.kind == "instance" and viewable.modes == INSTANCE_MODES and viewable.data is not None
    c2w = look_at(torch.tensor([2.5, -1.5, 1.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    wxyz, pos = c2w_to_viewer(c2w.numpy())
    K, w, h = preview_intrinsics(math.radians(40), 1.0, 12)
    labels = viewable.run.render(c2w, K, w, h)["labels"]
    assert np.array_equal(render_for_camera(viewable, wxyz, pos, math.radians(40), 1.0, 12, "instances"), to_uint8(torch.as_tensor(palette(labels.numpy()))))
    assert np.array_equal(render_for_camera(viewable, wxyz, pos, math.radians(40), 1.0, 12, "rgb"), to_uint8(viewable.run.nerf.render_image(c2w, K, w, h)["rgb"]))
