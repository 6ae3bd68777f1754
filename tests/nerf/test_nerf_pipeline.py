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


def _background_psnr(data, split="test") -> float:
    """Mean PSNR of the trivial answer, the background colour everywhere (about 12 dB on the tiny scene)."""
    from physinv.core.metrics import psnr
    from physinv.io.dataset import load_views

    views = load_views(data, split)
    return sum(float(psnr(views.background.expand_as(img), img)) for img in views.images) / len(views)


def test_psnr_rises_on_tiny_scene(ngp_run, tiny_scene):
    run, result = ngp_run
    evals = [r["eval_psnr"] for r in _log(run) if r.get("eval")]
    assert len(evals) >= 3
    # held-out PSNR (2 test views; 8 training views limit what can generalise) keeps rising and
    # clearly beats the background-only answer (~12 dB)
    assert evals[-1] > evals[0] + 1.0 and evals[-1] > _background_psnr(tiny_scene) + 6.0
    train_psnr = [r["psnr"] for r in _log(run) if "psnr" in r and not r.get("eval")]
    assert train_psnr[-1] > train_psnr[0] + 8.0 and train_psnr[-1] > 20.0


def test_occupancy_grid_keeps_all_density(ngp_run, tiny_scene):
    """Rendering through the trained grid equals rendering with nothing culled, up to the fog the
    grid is allowed to drop: cells whose density x step stays under the threshold (0.01 per step).
    Dropping fog of optical depth tau in front of (or behind) anything changes a ray's colour by at
    most 1 - exp(-tau); that bound is checked ray by ray with the dropped optical depth measured."""
    from physinv.core.volume import segment_sum
    from physinv.io.dataset import load_views
    from physinv.nerf.train import sample_rays

    run, _ = ngp_run
    r = load_run(run)
    sampler = r.model.sampler
    grid = sampler.grid
    views = load_views(tiny_scene, "train")
    o, d, _, _ = sample_rays(views, 2048, torch.Generator().manual_seed(0))
    culled = r.render_rays(o, d)
    saved = grid.occupied.clone()
    grid.occupied.fill_(True)
    full = r.render_rays(o, d)
    every = grid.sample(o, d, sampler.step)  # all marching samples, no cell culled
    grid.occupied.copy_(saved)
    assert (~saved).any()  # the grid does skip space
    points = every.points(o, d)
    dropped = ~grid.is_occupied(points)
    tau_sample = r.density(points) * every.deltas * dropped  # optical depth of each dropped sample
    tau = segment_sum(tau_sample, every.ray_indices, every.n_rays)
    colour_change = (culled["rgb"] - full["rgb"]).abs()
    # (+ early termination's 1e-4 of transmittance, + float32 round-off)
    excess = colour_change.amax(-1) - (1.0 - torch.exp(-tau))
    assert (excess <= 2e-4).all(), float(excess.max())
    # what is dropped is fog under the grid's threshold (density x step < 0.01), but for a few
    # samples in cells whose stored maximum lags the field (one random point per cell per update)
    assert dropped.sum() > 0.3 * len(every) and tau_sample[dropped].quantile(0.99) < grid.threshold
    assert colour_change.mean() < 0.002, float(colour_change.mean())
    # 2. after a few full updates of the final field, every point whose density is clearly above
    #    the threshold (10x) lies in an occupied cell
    for _ in range(4):
        grid.update(r.model.density, n_cells=grid.density.numel())
    pts = r.aabb[0] + torch.rand(100000, 3) * (r.aabb[1] - r.aabb[0])
    holds = r.density(pts) * sampler.step > 10 * grid.threshold
    assert holds.any() and grid.is_occupied(pts[holds]).all()


def test_density_is_inside_the_objects(ngp_run, tiny_scene):
    """Geometry, not only pictures: the density inside the scene's sphere (radius 0.4 at
    (0.45, -0.35, 0)) is far above the density in empty space (outside every object's box)."""
    import trimesh

    r = load_run(ngp_run[0])
    torch.manual_seed(0)
    pts = torch.rand(20000, 3) * 2 - 1
    empty = torch.ones(len(pts), dtype=torch.bool)
    for name in ("sphere", "cube", "cylinder"):
        lo, hi = (torch.tensor(b, dtype=torch.float32) for b in trimesh.load(tiny_scene / "meshes" / f"{name}.ply").bounds)
        empty &= ~((pts >= lo - 0.1) & (pts <= hi + 0.1)).all(-1)
    inside = torch.linalg.norm(pts - torch.tensor([0.45, -0.35, 0.0]), dim=-1) < 0.3
    sigma = r.density(pts)
    assert inside.sum() > 100 and empty.sum() > 1000
    assert sigma[inside].median() > 20 * sigma[empty].median(), (float(sigma[inside].median()), float(sigma[empty].median()))


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
    assert _background_psnr(tiny_scene) + 6.0 < real["psnr"] < metrics["psnr"]


def _fused_kernel_built() -> bool:
    from physinv.core import hashgrid_cpu

    return hashgrid_cpu.load() is not None


@pytest.mark.parametrize(
    "variant",
    [
        dict(hash_backend="torch"),
        pytest.param(dict(hash_backend="fused"), marks=pytest.mark.skipif(not _fused_kernel_built(), reason="fused hash-grid kernel not built (make setup)")),
        dict(hash_backend="torch", sparse_grad=True),
    ],
    ids=["reference-encoding", "fused-kernel", "instant-ngp-sparse-adam"],
)
def test_resume_continues_the_same_run(tiny_scene, tmp_path, variant, TINY, monkeypatch):
    """A run interrupted (SIGINT) after 21 of its 40 steps and run again ends with the very weights
    of the uninterrupted run: model, optimiser, schedule and random state all resume."""
    import os
    import signal

    from physinv.nerf.models import HashGridNerf

    torch.set_num_threads(1)
    cfg = dict(TINY, checkpoint_every=10, eval_every=1000, batch_rays=64, **variant)
    straight = tmp_path / "straight"
    train(tiny_scene, straight, NerfConfig(method="ngp", steps=40, **cfg), quiet=True)
    split = tmp_path / "split"
    update = HashGridNerf.update

    def interrupted_at_20(self, step):
        if step == 20:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C: the step finishes, a checkpoint is written
        update(self, step)

    monkeypatch.setattr(HashGridNerf, "update", interrupted_at_20)
    first = train(tiny_scene, split, NerfConfig(method="ngp", steps=40, **cfg), quiet=True)
    assert first.fit.stopped_by == "interrupt" and first.fit.step == 21
    monkeypatch.setattr(HashGridNerf, "update", update)
    again = train(tiny_scene, split, NerfConfig(method="ngp", steps=40, **cfg), quiet=True)
    assert again.fit.resumed_from == 21 and again.fit.step == 40
    steps = [r["step"] for r in _log(split) if not r.get("eval")]
    assert steps == sorted(steps) and steps[-1] == 40
    a, b = load_run(straight).model.state_dict(), load_run(split).model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit for bit
    with pytest.raises(PhysinvError, match="trained with --method ngp"):
        train(tiny_scene, split, NerfConfig(method="plain", steps=50, **cfg), quiet=True)


def test_faithful_nerf_and_plain_train(tiny_scene, tmp_path, TINY):
    torch.set_num_threads(1)
    small = dict(width=32, coarse_samples=16, fine_samples=16, batch_rays=128, eval_every=20, eval_rays=512)
    res = train(tiny_scene, tmp_path / "nerf", NerfConfig(method="nerf", steps=120, lr=5e-3, **small), quiet=True)
    log = _log(tmp_path / "nerf")
    losses = [r["loss"] for r in log if "loss" in r]  # steps 1, 25, 50, 75, 100, 120
    evals = [r["eval_psnr"] for r in log if r.get("eval")]  # every 20 steps
    background = _background_psnr(tiny_scene)
    assert res.fit.step == 120 and len(losses) == 6 and len(evals) == 6
    # the loss halves over the run (each logged loss is one noisy batch: compare pairs) and the
    # held-out PSNR climbs well above the background-only answer
    assert sum(losses[-2:]) < 0.5 * sum(losses[:2]), losses
    assert evals[-1] > evals[0] + 2.0 and evals[-1] > background + 4.0, (evals, background)
    r = load_run(tmp_path / "nerf")
    assert r.model.coarse.trunk.hidden[4].in_features == 32 + 63  # input skip at the fifth layer
    out = r.render_rays(torch.zeros(4, 3) + torch.tensor([0.0, -4.0, 0.0]), torch.tensor([[0.0, 1.0, 0.0]] * 4))
    assert out["rgb"].shape == (4, 3)
    res = train(tiny_scene, tmp_path / "plain", NerfConfig(method="plain", steps=60, **TINY), quiet=True)
    assert res.fit.step == 60 and res.eval_psnr > background + 4.0, (res.eval_psnr, background)


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
    assert line["views"] == 2 and line["psnr"] > _background_psnr(tiny_scene) + 6.0 and 0 < line["ssim"] <= 1
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
    # the mesh is near the true surface: far closer than the scene box's own surface (Chamfer ~0.54)
    import trimesh

    from physinv.nerf.api import mesh_chamfer

    box = mesh_chamfer(trimesh.creation.box(extents=(2.0, 2.0, 2.0)), tiny_scene / "meshes" / "scene.ply")["chamfer"]
    assert metrics["chamfer"] < 0.15 and metrics["chamfer"] < box / 3, (metrics["chamfer"], box)


def test_cli_rejects_unknown_method(tiny_scene, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nerf", "train", str(tiny_scene), "--out", str(tmp_path / "x"), "--method", "mipnerf"])
    assert exc.value.code == 2
    assert "unknown method 'mipnerf'" in capsys.readouterr().err


def test_run_schedule_ends_every_run_at_the_small_rate():
    """lr_schedule "run": the rate falls exponentially with the share of the run done, by steps or by
    training time, whichever budget is nearer its end."""
    from physinv.core.train import RunProgress
    from physinv.nerf.config import resolve
    from physinv.nerf.train import lr_scheduler

    cfg = resolve(NerfConfig(method="ngp", lr_schedule="run", lr_final_fraction=0.01), "cpu")
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([param], lr=cfg.lr)
    progress = RunProgress(steps=100)
    scheduler = lr_scheduler(optimizer, cfg, progress)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.01**0.5)
    progress.max_seconds, progress.elapsed_s = 60.0, 45.0  # the time budget is 75 % spent
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.01**0.75)
    progress.elapsed_s = 600.0
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # never below the final rate
    with pytest.raises(PhysinvError, match="--lr-schedule: must be one of steps, run"):
        resolve(NerfConfig(lr_schedule="cosine"), "cpu")


def test_runs_saved_before_the_sampler_split_still_load(TINY):
    """Checkpoints of earlier versions kept the occupancy grid at ``grid.*`` and ``cull_skip`` on the model."""
    from physinv.nerf.config import resolve
    from physinv.nerf.models import build_model

    cfg = resolve(NerfConfig(method="ngp", **TINY), "cpu")
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    model = build_model(cfg, aabb)
    model.sampler.grid.density.uniform_()
    model.sampler.cull_skip.fill_(3)
    legacy = {k.replace("sampler.", "", 1): v for k, v in model.state_dict().items()}
    assert "grid.density" in legacy and "cull_skip" in legacy
    fresh = build_model(cfg, aabb)
    fresh.load_state_dict(legacy)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
