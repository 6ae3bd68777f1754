"""Early stopping of ngp/plain: held-out training pixels are never trained on, the best-validated
model is kept across a resume, and inference loads it rather than the last step's weights."""

import dataclasses

import pytest
import torch

from physinv.core.train import CHECKPOINT_NAME, LOG_NAME, JsonlLog, KeptWeights, load_checkpoint, save_checkpoint
from physinv.core.metrics import mse_to_psnr
from physinv.io.dataset import ViewSet, load_views
from physinv.nerf.api import load_run
from physinv.nerf.config import NerfConfig
from physinv.nerf.train import holdout_pixels, render_rays_chunked, sample_rays, train


def _views(n: int, h: int, w: int) -> ViewSet:
    from physinv.core.camera import intrinsics_from_fov, orbit_poses

    K = intrinsics_from_fov(1.0, w, h).float().expand(n, 4).clone()
    return ViewSet(torch.rand(n, h, w, 3), None, orbit_poses(n, 3.0, 20.0).float(), K, w, h, torch.ones(3), None, {}, source=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape, crop", [((3, 12, 16), 1.0), ((2, 9, 7), 1.0), ((3, 12, 16), 0.5), ((2, 9, 7), 0.6)], ids=["even-width", "odd-width", "crop", "odd-crop"])
def test_held_out_pixels_are_never_drawn(shape, crop):
    views = _views(*shape)
    mask, _ = holdout_pixels(views, 20, torch.Generator().manual_seed(0))
    assert 15 <= int(mask.sum()) <= 20 and not mask[..., 1::2].any()  # even columns only
    # mark the held-out pixels in the images: their validation rays see the mark, no draw ever does
    marked = torch.zeros_like(views.images)
    marked[mask] = 1.0
    marked_views = dataclasses.replace(views, images=marked)
    same, rays = holdout_pixels(marked_views, 20, torch.Generator().manual_seed(0))
    assert torch.equal(same, mask) and len(rays.colors) == int(mask.sum()) and bool((rays.colors == 1.0).all())
    gen = torch.Generator().manual_seed(1)
    drawn = sample_rays(marked_views, 20000, gen, crop=crop, exclude=mask)
    assert float(drawn.colors.max()) == 0.0
    # without the exclusion they are drawn at their share (the test of the test)
    if crop == 1.0:
        assert float(sample_rays(marked_views, 20000, gen).colors[:, 0].mean()) > 0.5 * float(mask.float().mean())


def test_kept_weights_keep_the_best_and_never_nan():
    module = torch.nn.Linear(2, 1)
    kept = KeptWeights(module)
    for step, score in [(10, 20.0), (20, 25.0), (30, float("nan")), (40, 24.0)]:
        with torch.no_grad():
            module.weight.fill_(step)
        kept.update(score, step, eval_psnr=score + 1)
    assert kept.step == 20 and kept.score == 25.0 and kept.info == {"eval_psnr": 26.0}
    assert float(kept.weights["weight"][0, 0]) == 20.0
    other = KeptWeights(module)
    other.load_state_dict(kept.state_dict())
    assert other.step == 20 and not other.update(24.9, 50) and other.update(25.1, 60)


def test_the_kept_model_survives_a_resume_and_is_what_load_run_gives(tiny_scene, tmp_path, TINY):
    """Train 60 steps, then wreck the last weights in the checkpoint and resume to 80: the wrecked
    model validates worse, so the step-60 model stays kept; ``load_run`` loads it (its validation
    PSNR re-measured equals the logged best) while ``weights="last"`` loads the wrecked one."""
    torch.set_num_threads(1)
    run = tmp_path / "run"
    cfg = dict(TINY, eval_every=20, checkpoint_every=20, val_fraction=0.05)
    first = train(tiny_scene, run, NerfConfig(method="ngp", steps=60, **cfg), quiet=True)
    assert first.kept_step is not None
    ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    tables = [k for k in ckpt["state"]["model"] if "encoding" in k]
    gen = torch.Generator().manual_seed(0)
    for k in tables:
        ckpt["state"]["model"][k] = ckpt["state"]["model"][k] + torch.randn(ckpt["state"]["model"][k].shape, generator=gen)
    save_checkpoint(run / CHECKPOINT_NAME, ckpt)
    again = train(tiny_scene, run, NerfConfig(method="ngp", steps=80, **cfg), quiet=True)
    evals = [r for r in JsonlLog(run / LOG_NAME).read() if r.get("eval")]
    best = max(evals, key=lambda r: r["val_psnr"])
    assert again.kept_step == best["step"] == first.kept_step <= 60 and evals[-1]["val_psnr"] < best["val_psnr"] - 1.0
    assert evals[-1]["kept_eval_psnr"] == best["eval_psnr"] and again.eval_psnr == best["eval_psnr"]

    kept_run, last_run = load_run(run), load_run(run, weights="last")
    assert kept_run.step == best["step"] and last_run.step == 80
    views = load_views(tiny_scene, "train")
    n_val = round(cfg["val_fraction"] * views.images[..., 0].numel())
    _, val = holdout_pixels(views, min(cfg["eval_rays"], n_val), torch.Generator().manual_seed(NerfConfig().seed + 2))
    for loaded, logged in [(kept_run, best["val_psnr"]), (last_run, evals[-1]["val_psnr"])]:
        rgb = render_rays_chunked(loaded.model, val.origins, val.dirs, views.background)["rgb"]
        assert float(mse_to_psnr(torch.nn.functional.mse_loss(rgb, val.colors))) == pytest.approx(logged, abs=1e-3)


def test_nerf_does_not_validate_by_default_and_the_fraction_is_checked():
    from physinv.errors import PhysinvError
    from physinv.nerf.config import resolve

    assert resolve(NerfConfig(method="nerf"), "cpu").val_fraction == 0.0  # the paper trains on every pixel
    assert resolve(NerfConfig(method="ngp"), "cpu").val_fraction == 0.01
    with pytest.raises(PhysinvError, match="--val-fraction"):
        resolve(NerfConfig(method="ngp", val_fraction=0.6), "cpu")
