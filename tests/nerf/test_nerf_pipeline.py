"""NeRF pipeline on tiny data (CPU): training improves PSNR, resume, eval, render, mesh, CLI errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from physinv.cli import main
from physinv.core.train import LOG_NAME, JsonlLog
from physinv.errors import PhysinvError
from physinv.nerf.api import evaluate, load_run
from physinv.nerf.config import NerfConfig
from physinv.nerf.train import train



def _cli(args):
    """Run the CLI in-process; success is exit code 0 (typer exits even on success)."""
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def _log(run):
    return JsonlLog(Path(run) / LOG_NAME).read()


def test_psnr_rises_on_tiny_scene(ngp_run):
    run, result = ngp_run
    evals = [r["eval_psnr"] for r in _log(run) if r.get("eval")]
    assert len(evals) >= 3
    # held-out PSNR (2 test views; 8 training views limit what can generalise) keeps rising
    assert evals[-1] > evals[0] + 1.0 and evals[-1] > 18.0
    train_psnr = [r["psnr"] for r in _log(run) if "psnr" in r and not r.get("eval")]
    assert train_psnr[-1] > train_psnr[0] + 8.0 and train_psnr[-1] > 20.0


def test_occupancy_grid_keeps_all_density(ngp_run, tiny_scene):
    run, _ = ngp_run
    r = load_run(run)
    grid = r.model.sampler.grid
    # 1. rendering with the trained grid equals rendering with nothing culled: the skipped space
    #    held no density that a ray could see
    from physinv.io.dataset import load_views
    from physinv.nerf.train import sample_rays

    views = load_views(tiny_scene, "train")
    o, d, _ = sample_rays(views, 2048, torch.Generator().manual_seed(0))
    culled = r.render_rays(o, d)
    saved = grid.occupied.clone()
    grid.occupied.fill_(True)
    full = r.render_rays(o, d)
    grid.occupied.copy_(saved)
    assert (~saved).any()  # the grid does skip space
    # (a ray may still graze fog that the field grew after the cell's last update)
    diff = (culled["rgb"] - full["rgb"]).abs()
    assert diff.max() < 0.05 and diff.mean() < 0.002, (float(diff.max()), float(diff.mean()))
    # (only fog below the threshold, density * step < 0.01 per step, is dropped)
    assert (culled["opacity"] - full["opacity"]).abs().mean() < 0.01
    # 2. after a few full updates of the final field, every point whose density is clearly above
    #    the threshold (10x) lies in an occupied cell
    for _ in range(4):
        grid.update(r.model.density, n_cells=grid.density.numel())
    pts = r.aabb[0] + torch.rand(100000, 3) * (r.aabb[1] - r.aabb[0])
    holds = r.density(pts) * r.model.sampler.step > 10 * grid.threshold
    assert holds.any() and grid.is_occupied(pts[holds]).all()


def test_api_queries_density_and_colour(ngp_run):
    run, _ = ngp_run
    r = load_run(run)
    pts = torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    sigma = r.density(pts)
    rgb = r.radiance(pts, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert sigma.shape == (2,) and sigma[1] == 0  # outside the box
    assert rgb.shape == (2, 3) and ((rgb >= 0) & (rgb <= 1)).all()


def test_exact_reproduction_scores_very_high_psnr(ngp_run, tiny_scene, monkeypatch):
    run, _ = ngp_run
    r = load_run(run)
    from physinv.io.dataset import load_views

    views = load_views(tiny_scene, "test")

    def perfect(c2w, intrinsics, width, height, background=None):
        i = int(torch.argmin((views.c2w - c2w.cpu()).abs().flatten(1).sum(1)))
        return {"rgb": views.images[i]}

    monkeypatch.setattr(r, "render_image", perfect)
    metrics = evaluate(r, tiny_scene)
    assert metrics["views"] == 2 and metrics["psnr"] > 60 and metrics["ssim"] > 0.999
    real = evaluate(load_run(run), tiny_scene)
    assert 15 < real["psnr"] < metrics["psnr"]


@pytest.mark.parametrize("sparse_grad", [False, True], ids=["dense-adam", "instant-ngp-sparse-adam"])
def test_resume_continues_the_same_run(tiny_scene, tmp_path, sparse_grad, TINY):
    torch.set_num_threads(1)
    cfg = dict(TINY, checkpoint_every=10, eval_every=1000, batch_rays=64, sparse_grad=sparse_grad)
    straight = tmp_path / "straight"
    train(tiny_scene, straight, NerfConfig(method="ngp", steps=40, **cfg), quiet=True)
    split = tmp_path / "split"
    first = train(tiny_scene, split, NerfConfig(method="ngp", steps=20, **cfg), quiet=True)
    assert first.fit.step == 20
    again = train(tiny_scene, split, NerfConfig(method="ngp", steps=40, **cfg), quiet=True)
    assert again.fit.resumed_from == 20 and again.fit.step == 40
    steps = [r["step"] for r in _log(split) if not r.get("eval")]
    assert steps == sorted(steps) and steps[-1] == 40
    a, b = load_run(straight).model.state_dict(), load_run(split).model.state_dict()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    with pytest.raises(PhysinvError, match="trained with --method ngp"):
        train(tiny_scene, split, NerfConfig(method="plain", steps=50, **cfg), quiet=True)


def test_faithful_nerf_and_plain_train(tiny_scene, tmp_path, TINY):
    torch.set_num_threads(1)
    small = dict(width=32, coarse_samples=16, fine_samples=16, batch_rays=128, eval_every=20, eval_rays=512)
    res = train(tiny_scene, tmp_path / "nerf", NerfConfig(method="nerf", steps=60, lr=2e-3, **small), quiet=True)
    losses = [r["loss"] for r in _log(tmp_path / "nerf") if "loss" in r]
    assert res.fit.step == 60 and losses[-1] < losses[0]
    r = load_run(tmp_path / "nerf")
    assert r.model.coarse.trunk.hidden[4].in_features == 32 + 63  # input skip at the fifth layer
    out = r.render_rays(torch.zeros(4, 3) + torch.tensor([0.0, -4.0, 0.0]), torch.tensor([[0.0, 1.0, 0.0]] * 4))
    assert out["rgb"].shape == (4, 3)
    res = train(tiny_scene, tmp_path / "plain", NerfConfig(method="plain", steps=60, **TINY), quiet=True)
    assert res.fit.step == 60 and res.eval_psnr > 12


def test_density_noise_revives_a_dead_start():
    """An untrained NeRF trunk is nearly constant in space; when its sigma pre-activation is
    negative everywhere, the ReLU passes no gradient and training never starts. The training-time
    density noise (the authors' raw_noise_std) gives the density head a gradient again."""
    from physinv.core.encoding import positional_encoding
    from physinv.nerf.models import NeRFField

    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    grads = {}
    for noise in (0.0, 1.0):
        torch.manual_seed(0)
        field = NeRFField(aabb, width=32, density_noise_std=noise).train()
        pts, dirs = torch.rand(512, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(512, 3), dim=-1)
        with torch.no_grad():  # shift the density head so that its pre-activation is < -0.05 at every point
            raw = field.sigma_head(field.trunk(positional_encoding(field.normalise(pts), field.pos_freqs)))
            field.sigma_head.bias -= raw.max() + 0.05
        out = field(pts, dirs)
        sigma, rgb = out["sigma"], out["rgb"]
        if noise == 0.0:
            assert float(sigma.detach().max()) == 0.0  # the dead start
        (sigma.sum() + rgb.sum()).backward()
        grads[noise] = float(field.sigma_head.weight.grad.abs().sum())
        field.eval()
        assert torch.equal(field.density(pts), field.density(pts))  # no noise outside training
    assert grads[0.0] == 0.0 and grads[1.0] > 0.0


def test_precrop_draws_rays_from_the_central_window(tiny_scene):
    import dataclasses

    from physinv.io.dataset import load_views
    from physinv.nerf.train import sample_rays

    views = load_views(tiny_scene, "train")
    H, W = views.height, views.width
    h, w = round(H * 0.5), round(W * 0.5)
    marked = torch.zeros_like(views.images)
    marked[:, (H - h) // 2 : (H - h) // 2 + h, (W - w) // 2 : (W - w) // 2 + w] = 1.0
    views = dataclasses.replace(views, images=marked)
    gen = torch.Generator().manual_seed(0)
    assert bool((sample_rays(views, 4000, gen, crop=0.5)[2] == 1.0).all())
    inside = (sample_rays(views, 4000, gen)[2][:, 0] == 1.0).float().mean()
    assert abs(float(inside) - h * w / (H * W)) < 0.03  # the whole image: the window's share


def _resized_copy(src: Path, dst: Path, size: int) -> Path:
    import imageio.v3 as iio

    shutil.copytree(src, dst)
    meta = json.loads((dst / "transforms_test.json").read_text())
    meta["w"] = meta["h"] = size
    for frame in meta["frames"]:
        path = dst / (frame["file_path"] + ("" if frame["file_path"].endswith(".png") else ".png"))
        image = iio.imread(path)
        iio.imwrite(path, image[:: image.shape[0] // size, :: image.shape[1] // size])
        for key in [k for k in frame if k.endswith("_path") and k != "file_path"]:
            del frame[key]
    (dst / "transforms_test.json").write_text(json.dumps(meta))
    return dst


def test_eval_refuses_test_images_of_another_size(ngp_run, tiny_scene, tmp_path, capsys):
    run, _ = ngp_run
    bad = _resized_copy(tiny_scene, tmp_path / "small", 16)
    with pytest.raises(PhysinvError, match="16x16 but the run .* was trained on 32x32"):
        evaluate(load_run(run), bad)
    with pytest.raises(SystemExit) as exc:
        main(["nerf", "eval", str(run), "--data", str(bad), "--device", "cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "transforms_test.json" in err[0] and "trained on 32x32" in err[0]


def test_cli_eval_render_mesh(ngp_run, tiny_scene, tmp_path, capsys):
    run, _ = ngp_run
    _cli(["nerf", "eval", str(run), "--data", str(tiny_scene), "--device", "cpu"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["views"] == 2 and line["psnr"] > 15 and 0 < line["ssim"] <= 1
    _cli(["nerf", "render", str(run), "--out", str(tmp_path / "orbit"), "--orbit", "3", "--device", "cpu"])
    for name in ("rgb_002.png", "depth_000.png", "depth_000.npy", "opacity_001.png", "orbit.gif"):
        assert (tmp_path / "orbit" / name).is_file(), name
    r = load_run(run)
    from physinv.nerf.api import density_grid

    grid = density_grid(r, 24)
    level = float(np.quantile(grid, 0.9))
    _cli(["nerf", "mesh", str(run), "--out", str(tmp_path / "m.ply"), "--res", "24", "--level", str(level), "--device", "cpu"])
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "m.ply").is_file() and metrics["faces"] > 0
    assert "chamfer" in metrics and metrics["chamfer"] > 0


def test_cli_rejects_unknown_method(tiny_scene, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nerf", "train", str(tiny_scene), "--out", str(tmp_path / "x"), "--method", "mipnerf"])
    assert exc.value.code == 2
    assert "unknown method 'mipnerf'" in capsys.readouterr().err
