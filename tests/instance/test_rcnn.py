"""NeRF-RCNN pieces: scenes, augmentation, RoIAlign, FCOS targets, mask pasting, the detector file."""

import numpy as np
import pytest
import torch

from physinv.instance.detector import augment, load_detector, save_detector
from physinv.instance.rcnn import NerfRcnn, RcnnConfig, centreness, fcos_targets, paste_masks, roi_align_3d, space_to_depth
from physinv.instance.scenes import make_scene


def _boxes_from_labels(labels, n):
    out = []
    for k in range(1, n + 1):
        idx = torch.nonzero(labels == k)
        out.append(torch.cat([idx.min(0).values, idx.max(0).values + 1]).float())
    return torch.stack(out)


def test_scene_boxes_and_classes_match_its_labels():
    s = make_scene(np.random.default_rng(3), 32)
    labels = torch.as_tensor(s["labels"].astype(np.int64))
    assert s["grid"].shape == (4, 32, 32, 32) and 0.0 <= s["grid"].min() and s["grid"].max() <= 1.0
    assert torch.equal(_boxes_from_labels(labels, len(s["boxes"])), torch.as_tensor(s["boxes"]))
    assert set(s["classes"].tolist()) <= {1, 2, 3}
    # objects are dense: mean alpha inside the objects is far above the mean outside
    alpha = s["grid"][3]
    assert alpha[s["labels"] > 0].mean() > 5 * alpha[s["labels"] == 0].mean()


@pytest.mark.parametrize("seed", range(3))
def test_augmentation_moves_boxes_with_the_grid(seed):
    s = make_scene(np.random.default_rng(seed), 32)
    grid, labels, boxes = torch.as_tensor(s["grid"]), torch.as_tensor(s["labels"].astype(np.int64)), torch.as_tensor(s["boxes"])
    gen = torch.Generator().manual_seed(seed)
    for _ in range(8):
        g2, l2, b2 = augment(grid, labels, boxes, gen)
        assert torch.equal(_boxes_from_labels(l2, len(boxes)), b2)
        assert torch.isclose(g2.sum(), grid.sum(), rtol=1e-5)


def test_roi_align_is_exact_on_a_linear_field():
    """Trilinear sampling reproduces a linear function, and the mean of the samples of a bin is its
    value at the bin centre: RoIAlign of f(x) = a.x + c is f at the bin centres."""
    n, stride = 8, 4
    a, c = torch.tensor([0.3, -0.2, 0.5]), 1.0
    centres = (torch.stack(torch.meshgrid(*[torch.arange(n) + 0.5] * 3, indexing="ij"), -1) * stride)  # input-voxel units
    feature = (centres @ a + c)[None].double()  # (1, 8, 8, 8)
    roi = torch.tensor([[5.0, 6.0, 7.0, 21.0, 17.0, 27.0]], dtype=torch.float64)
    out = roi_align_3d(feature, roi, size=4, stride=stride)[0, 0]
    frac = (torch.arange(4, dtype=torch.float64) + 0.5) / 4
    bins = [roi[0, d] + frac * (roi[0, d + 3] - roi[0, d]) for d in range(3)]
    expected = torch.stack(torch.meshgrid(*bins, indexing="ij"), -1) @ a.double() + c
    assert torch.allclose(out, expected, atol=1e-9)


def test_space_to_depth_is_a_permutation():
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4, 4)
    y = space_to_depth(x, 2)
    assert y.shape == (1, 16, 2, 2, 2)
    assert torch.equal(y.sum((2, 3, 4)).sum(), x.sum()) and torch.equal(torch.sort(y.flatten()).values, x.flatten())
    assert y[0, :8, 0, 0, 0].tolist() == x[0, 0, :2, :2, :2].flatten().tolist()


def test_fcos_targets_and_centreness():
    boxes = torch.tensor([[0.0, 0, 0, 16, 16, 16], [4, 4, 4, 12, 12, 12]])
    pts = torch.tensor([[8.0, 8, 8], [2, 2, 2], [30, 30, 30]])
    pos, assigned = fcos_targets(pts, 4, boxes)
    assert pos.tolist() == [True, False, False]  # (2,2,2) is inside box 0 but far from its centre
    assert torch.equal(assigned[0], boxes[1])  # the smaller box wins
    d = torch.cat([pts[:1] - boxes[1, :3], boxes[1, 3:] - pts[:1]], -1)
    assert centreness(d).item() == pytest.approx(1.0)


def test_paste_masks_fills_the_box():
    det = {"boxes": torch.tensor([[2.0, 2, 2, 6, 6, 6]]), "scores": torch.tensor([0.9]), "masks": torch.ones(1, 5, 5, 5)}
    labels = paste_masks(det, (8, 8, 8))
    expected = torch.zeros(8, 8, 8, dtype=torch.long)
    expected[2:6, 2:6, 2:6] = 1
    assert torch.equal(labels, expected)


def test_untrained_detector_runs_and_file_is_small(tmp_path):
    torch.manual_seed(0)
    model = NerfRcnn(RcnnConfig(grid_res=32))
    s = make_scene(np.random.default_rng(0), 32)
    losses = model.loss(torch.as_tensor(s["grid"]), torch.as_tensor(s["boxes"]), torch.as_tensor(s["classes"]),
                        torch.as_tensor(s["labels"].astype(np.int64)))
    assert torch.isfinite(losses["total"]) and losses["total"] > 0
    losses["total"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    det = model.eval().detect(torch.as_tensor(s["grid"]), score_threshold=0.0)
    assert det["masks"].shape[1:] == (10, 10, 10) and len(det["boxes"]) == len(det["scores"])
    save_detector(model, tmp_path / "d.pt")
    assert (tmp_path / "d.pt").stat().st_size < 5 * 2**20
    again = load_detector(tmp_path / "d.pt")
    assert again.cfg.grid_res == 32


def test_not_a_detector_is_one_line(tmp_path, cli_error):
    (tmp_path / "scenes").mkdir()
    msg = cli_error(["instance", "train-detector", str(tmp_path / "scenes"), "--out", str(tmp_path / "r")])
    assert msg == f"physinv: error: {tmp_path / 'scenes' / 'index.json'}: not found (write scenes with `physinv instance make-scenes`)"
    bogus = tmp_path / "bogus.pt"
    torch.save({"x": torch.zeros(1)}, bogus)
    with pytest.raises(Exception, match="not a NeRF-RCNN detector"):
        load_detector(bogus)


def test_make_scenes_command(tmp_path, run_cli):
    from physinv.instance.scenes import list_scenes, load_scene

    line = run_cli(["instance", "make-scenes", "--out", tmp_path / "s", "--count", "3", "--res", "16", "--seed", "2"])
    assert line["scenes"] == 3 and line["objects"] >= 6
    files = list_scenes(tmp_path / "s")
    scene = load_scene(files[0])
    assert scene["grid"].shape == (4, 16, 16, 16) and scene["grid"].dtype == np.float32


def test_sample_grid_of_an_analytic_sphere():
    from physinv.instance.nerf_grid import detector_grid_shape, sample_grid

    aabb = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])
    density = lambda p: torch.where(p.norm(dim=-1) < 0.5, 500.0, 0.0)  # noqa: E731
    radiance = lambda p, d: (d * 0.5 + 0.5).expand_as(p)  # noqa: E731 - view-dependent: the mean over ± axes is 0.5
    shape = detector_grid_shape(aabb, 16)
    grid = sample_grid(density, radiance, aabb, shape)
    assert shape == (16, 16, 16) and grid.shape == (4, 16, 16, 16)
    centres = (torch.arange(16) + 0.5) / 8 - 1
    r = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), -1).norm(dim=-1)
    assert torch.allclose(grid[3], torch.where(r < 0.5, 1 - torch.exp(torch.tensor(-500.0 * 0.125)), torch.tensor(0.0)))
    assert torch.allclose(grid[:3], torch.full_like(grid[:3], 0.5))


def test_stride_2_level_feeds_the_roi_heads():
    torch.manual_seed(0)
    model = NerfRcnn(RcnnConfig(grid_res=32))
    feats = model.backbone(torch.rand(1, 4, 32, 16, 24))
    assert feats[2].shape == (1, 24, 16, 8, 12) and feats[4].shape == (1, 24, 8, 4, 6) and feats[8].shape == (1, 24, 4, 2, 3)
    legacy = NerfRcnn(RcnnConfig(grid_res=32, roi_level=4))
    assert 2 not in legacy.backbone(torch.rand(1, 4, 16, 16, 16)) and legacy.backbone.lat2 is None


def test_detector_file_without_the_newer_fields_loads_as_it_was_trained(tmp_path):
    """A file written before ``roi_level`` etc. existed has the stride-4 RoI heads: it must load with
    them (not today's defaults) and detect exactly as the model that wrote it."""
    from physinv.core.train import load_checkpoint, save_checkpoint
    from physinv.instance.detector import LEGACY_CONFIG

    torch.manual_seed(1)
    old = NerfRcnn(RcnnConfig(grid_res=32, **LEGACY_CONFIG)).eval()
    save_detector(old, tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in LEGACY_CONFIG}
    save_checkpoint(tmp_path / "old.pt", ckpt)
    again = load_detector(tmp_path / "old.pt")
    assert again.cfg.roi_level == 4 and again.cfg.roi_sampling == 2
    grid = torch.as_tensor(make_scene(np.random.default_rng(5), 32)["grid"])
    old.load_state_dict({k: v.half().float() for k, v in old.state_dict().items()})  # the file keeps fp16 weights
    a, b = old.detect(grid, score_threshold=0.0), again.detect(grid, score_threshold=0.0)
    assert torch.allclose(a["scores"], b["scores"]) and torch.allclose(a["boxes"], b["boxes"])


def test_shipped_detector_keeps_objects_at_the_paper_score_threshold():
    """The shipped detector on 6 generated scenes it never saw (another seed than its training
    scenes): boxes found, and their class scores pass the paper's 0.5 (the old 355-step file scored
    true objects ~0.33 here: its class head still gave the class prior)."""
    from physinv.instance.detector import evaluate_detector
    from physinv.instance.scenes import scene_rng

    torch.set_num_threads(1)
    scenes = [make_scene(scene_rng(7, i), 32) for i in range(6)]
    m = evaluate_detector(load_detector(), scenes, "cpu")
    n_objects = sum(len(s["boxes"]) for s in scenes) / len(scenes)
    assert m["ap25"] >= 0.9 and m["ap50"] >= 0.7
    assert m["object_score_median"] >= 0.5 and m["detections_per_scene"] >= 0.6 * n_objects
    assert m["mask_iou"] >= 0.4
