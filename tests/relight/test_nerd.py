"""NeRD: normals from the density, the BRDF decoder's ranges, illumination sets tied by `light`, a
tiny fit on a 2-light scene scored on held-out views, the CLI on NeRD runs, bad input."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from physinv.io.dataset import light_sets
from physinv.relight.config import RelightConfig
from physinv.relight.nerd import BrdfAutoEncoder, DecompositionNetwork, NerdShape, density_normals
from physinv.relight.train import train

TINY = dict(method="nerd", net_width=32, net_depth=2, pos_freqs=4, coarse_samples=16, fine_samples=16, batch_rays=256, lr=5e-3, log_every=10, checkpoint_every=50)
STEPS = 120


def test_normals_of_a_density_ball_point_outwards():
    """sigma = 10 sigmoid(20 (0.5 - |x|)): -grad sigma / |grad sigma| is x / |x| (within 1 degree)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True) * (0.2 + 0.6 * torch.rand(500, 1, generator=g, dtype=torch.float64))
    sigma, n = density_normals(lambda p: 10.0 * torch.sigmoid(20.0 * (0.5 - p.norm(dim=-1))), x)
    cos = (n * x / x.norm(dim=-1, keepdim=True)).sum(-1).clamp(-1, 1)
    assert float(torch.rad2deg(torch.arccos(cos)).max()) < 1.0
    assert not sigma.requires_grad and not n.requires_grad  # no graph kept outside training


@pytest.mark.parametrize("encoding", ["frequency", "hashgrid"])
def test_network_normals_are_minus_the_density_gradient(encoding):
    """The decomposition network's normals match central finite differences of its own raw density,
    and keep a graph into the weights while training (the shading loss shapes the density) — for the
    hash-grid trunk into its tables too."""
    torch.manual_seed(0)
    shape = NerdShape(32, 2, 3, 8, 8, encoding=encoding, hash_levels=4, log2_table_size=10, hash_finest_resolution=32)
    net = DecompositionNetwork(shape, latent=2, min_roughness=0.1).double()
    if net.trunk.grid is not None:  # features of a trained size (the U(-1e-4, 1e-4) start is all but flat)
        for table in net.trunk.grid.tables:
            torch.nn.init.uniform_(table, -1.0, 1.0)
    x = torch.rand(20, 3, dtype=torch.float64) * 1.6 - 0.8
    out = net(x, create_graph=True)
    eps = 1e-6  # inside one hash-grid cell (the trilinear blend is piecewise linear)
    fd = torch.stack([(net.raw_sigma(x + eps * e) - net.raw_sigma(x - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=torch.float64)], -1)
    torch.testing.assert_close(out["normal"], -fd / fd.norm(dim=-1, keepdim=True), atol=1e-6, rtol=1e-5)
    out["normal"].sum().backward()
    assert net.trunk.hidden[0].weight.grad is not None and net.trunk.hidden[0].weight.grad.abs().sum() > 0
    if net.trunk.grid is not None:
        assert net.trunk.grid.tables[-1].grad.abs().sum() > 0


def test_decoder_outputs_stay_in_range():
    torch.manual_seed(0)
    ae = BrdfAutoEncoder(8, latent=2, min_roughness=0.1)
    for layer in ae.decoder:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=5.0)
    z = torch.cat([torch.randn(2000, 2) * 40.0, torch.tensor([[40.0, 40.0], [-40.0, -40.0], [40.0, -40.0]])])
    with torch.no_grad():
        out = ae.decode(z)
    assert out["base_colour_srgb"].shape == (2003, 3) and out["metallic"].shape == (2003, 1)
    assert 0.0 <= float(out["base_colour_srgb"].min()) and float(out["base_colour_srgb"].max()) <= 1.0
    assert 0.0 <= float(out["metallic"].min()) and float(out["metallic"].max()) <= 1.0
    assert 0.1 <= float(out["roughness"].min()) and float(out["roughness"].max()) <= 1.0
    assert float(ae.encode(torch.randn(100, 8) * 1e6).detach().abs().max()) <= 40.0


def test_roughness_restart_sets_the_roughness_everywhere_and_clears_only_its_moments():
    """``restart_roughness_``: a decoder saturated at roughness 1 gives 0.5 at every latent afterwards;
    the other four outputs are unchanged and keep their Adam moments, the roughness row loses its own."""
    torch.manual_seed(0)
    ae = BrdfAutoEncoder(8, latent=2, min_roughness=0.1)
    with torch.no_grad():
        ae.decoder[-1].bias[4] = 12.0
    optimiser = torch.optim.Adam(ae.parameters(), lr=1e-3)
    z = torch.randn(500, 2) * 10.0
    ae.decode(z)["base_colour_srgb"].sum().backward()
    ae.decode(z)["roughness"].sum().backward()
    optimiser.step()
    with torch.no_grad():
        before = ae.decode(z)
        assert float(before["roughness"].min()) > 0.999
        ae.restart_roughness_(optimiser, 0.5)
        after = ae.decode(z)
    torch.testing.assert_close(after["roughness"], torch.full_like(after["roughness"], 0.5))
    torch.testing.assert_close(after["base_colour_srgb"], before["base_colour_srgb"])
    torch.testing.assert_close(after["metallic"], before["metallic"])
    for param in (ae.decoder[-1].weight, ae.decoder[-1].bias):
        state = optimiser.state[param]
        for key in ("exp_avg", "exp_avg_sq"):
            assert float(state[key][4].abs().max()) == 0.0 and float(state[key][:4].abs().max()) > 0.0


def test_light_sets_tie_frames_by_name():
    per_frame, sets = light_sets(["sky1", "sky0", None, "sky1", None, "sky0"])
    assert sets == ["sky0", "sky1", None, None]
    assert per_frame == [1, 0, 2, 1, 3, 0]


@pytest.fixture(scope="module")
def two_light_scene(tmp_path_factory):
    """The built-in scene, 10 train views at 32 px under 2 skies, 2 test views (one per sky), and
    the test cameras under an unseen light (transforms_relight.json)."""
    from physinv.synth.scene import synthesize

    return synthesize(tmp_path_factory.mktemp("two_lights") / "data", views=10, test_views=2, res=32, spp=8, lights=2, test_light=True, seed=1, progress=False)


def background_only_psnr(data) -> float:
    """The trivial answer on the test split: PSNR of the background colour alone, every pixel, mean over views."""
    from physinv.io.dataset import load_views
    from physinv.relight.api import masked_psnr

    views = load_views(data, "test")
    every = torch.ones(views.images.shape[1:3], dtype=torch.bool)
    return sum(masked_psnr(views.background.expand_as(im), im, every) for im in views.images) / len(views)


@pytest.fixture(scope="module")
def fitted(two_light_scene, tmp_path_factory, one_thread):
    run = tmp_path_factory.mktemp("nerd") / "run"
    train(two_light_scene, run, RelightConfig(steps=STEPS, **TINY), quiet=True)
    return two_light_scene, run


def test_sets_are_tied_and_start_from_one_mean(two_light_scene, tmp_path, one_thread):
    from physinv.relight.api import load_run

    data = tmp_path / "data"
    shutil.copytree(two_light_scene, data)
    path = data / "transforms_train.json"
    meta = json.loads(path.read_text())
    del meta["frames"][3]["light"], meta["frames"][4]["light"]  # two frames with no name: a set each
    path.write_text(json.dumps(meta))
    train(data, tmp_path / "run0", RelightConfig(steps=0, **TINY), quiet=True)
    run = load_run(tmp_path / "run0")
    assert run.light_sets == ["sky0", "sky1", None, None]
    store = run.model.lights
    assert store.sets == 4 and all(torch.equal(store.amplitude[0], store.amplitude[k]) for k in range(4))
    frames = json.loads((tmp_path / "run0" / "config.json").read_text())["frame_light"]
    assert frames == [0, 1, 0, 2, 3, 1, 0, 1, 0, 1]
    train(data, tmp_path / "run1", RelightConfig(steps=6, **TINY), quiet=True)
    trained = load_run(tmp_path / "run1").model.lights
    assert not torch.equal(trained.amplitude[0], trained.amplitude[1])  # sets move apart once trained


def test_tiny_fit_beats_trivial_answers_on_held_out_views(fitted, tmp_path):
    """Held-out views under the training lights (learnt illuminations): the run's own render beats
    the background-only image; relit under the unseen light: beats the untrained model."""
    from physinv.relight.api import evaluate, load_run

    data, run = fitted
    test = evaluate(load_run(run), data, "test", fit_steps=50)
    assert test["lights_used"] == {"learnt": 2, "fitted": 0}
    blank = background_only_psnr(data)
    print("nerd tiny fit:", test["psnr_render"], blank)
    assert test["psnr_render"] > blank + 2.0, (test["psnr_render"], blank)
    relit = evaluate(load_run(run), data, "relight", fit_steps=50)
    assert relit["lights_used"] == {"learnt": 0, "fitted": 2} and math.isfinite(relit["psnr_no_relight"])
    train(data, tmp_path / "untrained", RelightConfig(steps=0, **TINY), quiet=True)
    untrained = evaluate(load_run(tmp_path / "untrained"), data, "relight", fit_steps=50)
    print("nerd tiny relit:", relit["psnr_full_image"], untrained["psnr_full_image"], relit["psnr"], relit["psnr_no_relight"])
    assert relit["psnr_full_image"] > untrained["psnr_full_image"] + 2.0, (relit["psnr_full_image"], untrained["psnr_full_image"])


def test_small_latent_penalty_keeps_the_brdf_spatially_varying(two_light_scene, tmp_path, one_thread):
    """With the reference's latent penalty (0.1) a short fit's BRDF latent collapses to one point and
    the whole scene gets one base colour; the small preset's 1e-3 keeps it varying. 300 steps: at the
    fixture's 120, on the clear-day sky, neither has let it grow yet (1.2e-4 vs 3.4e-5)."""
    from physinv.relight.api import load_run

    assert "latent_l2" not in TINY  # the small preset's value

    def spread(latent_l2: float | None) -> float:
        """Standard deviation of the decoded base colour (linear) over 2000 points of the scene's box."""
        run = tmp_path / f"l2_{latent_l2}"
        extra = {} if latent_l2 is None else {"latent_l2": latent_l2}
        train(two_light_scene, run, RelightConfig(steps=300, **TINY, **extra), quiet=True)
        x = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
        return float(load_run(run).model.base_colour(x).std(0).mean())

    ours, collapsed = spread(None), spread(0.1)
    print("base colour spread:", ours, collapsed)
    assert ours > 0.02 and ours > 10 * collapsed, (ours, collapsed)  # measured 0.106 vs 2e-6 (seed 1: 0.131 vs 2e-4)


def test_hashgrid_variant_fits_and_trains_its_tables_at_their_own_rate(two_light_scene, tmp_path, one_thread):
    """The hash-grid variant (``encoding = "hashgrid"``): a tiny fit beats the background-only image
    on held-out views (300 steps: the tables start at 1e-4 and need more steps than the MLP's 120;
    measured +10.0 dB, +5.8 with seed 1); its tables train in their own Adam group at ``hash_lr``
    (instant-ngp's betas and eps) under the same schedule as the rest; the run reloads with its
    encoding. Without the variant's annealing and held-out pixels (next test): so short a run is far
    from the plateau the annealing is for, and annealing its last quarter cost 1.5, 1.9 and 1.1 dB
    with seeds 0, 1, 2."""
    from physinv.core.train import load_checkpoint
    from physinv.relight.api import evaluate, load_run
    from physinv.relight.nerd_fit import schedule

    tiny = {**{k: v for k, v in TINY.items() if k != "net_depth"}, "hash_levels": 4, "log2_table_size": 12, "anneal_fraction": 0.0, "val_fraction": 0.0}
    run = tmp_path / "hash"
    result = train(two_light_scene, run, RelightConfig(steps=300, encoding="hashgrid", **tiny), quiet=True)
    assert result.config.net_depth == 1 and result.config.hash_finest_resolution == 2 * 32  # defaults: one hidden layer, 2 cells per pixel
    loaded = load_run(run)
    assert loaded.config.encoding == "hashgrid" and loaded.model.fine.trunk.grid is not None
    groups = load_checkpoint(run / "checkpoint.pt")["state"]["optimizer"]["param_groups"]
    factor = schedule(299 / 300, result.config.schedule_paper_steps)["lr_factor"]  # the rate the last step (299 of 300) took
    assert [g["eps"] for g in groups] == [1e-8, 1e-15] and len(groups[1]["params"]) == 2 * 4  # two networks' tables
    assert groups[1]["lr"] == pytest.approx(result.config.hash_lr * factor, rel=1e-6) and groups[0]["lr"] == pytest.approx(TINY["lr"] * factor, rel=1e-6)
    test = evaluate(loaded, two_light_scene, "test", fit_steps=50)
    blank = background_only_psnr(two_light_scene)
    print("nerd hashgrid tiny fit:", test["psnr_render"], blank)
    assert test["psnr_render"] > blank + 4.0, (test["psnr_render"], blank)
    x = torch.rand(500, 3) * 1.6 - 0.8
    assert loaded.model.density(x).isfinite().all() and (loaded.model.density(x) >= 0).all()


def test_hashgrid_variant_anneals_and_keeps_its_best_model_on_held_out_pixels(two_light_scene, tmp_path, one_thread, monkeypatch):
    """The hash-grid variant's defaults beyond the paper. Annealing: over the run's last quarter the
    rate falls exponentially to 0.01 x the reference schedule's, in both Adam groups, and the
    roughness output restarts once where it begins (not again on a resume). Early stopping
    (``val_fraction``): no training draw ever lands on a held-out pixel; after a resume from a
    checkpoint whose last weights were wrecked, the model kept is still the best validated one;
    ``load_run`` gives it (its validation PSNR re-measured equals the logged one) and
    ``weights="last"`` the wrecked one."""
    import physinv.relight.nerd_fit as nerd_fit
    from physinv.core.train import CHECKPOINT_NAME, LOG_NAME, JsonlLog, load_checkpoint, save_checkpoint
    from physinv.relight.api import load_run
    from physinv.relight.config import resolve
    from physinv.relight.data import load_relight_views

    variant, paper = resolve(RelightConfig(method="nerd", encoding="hashgrid")), resolve(RelightConfig(method="nerd"))
    assert (variant.val_fraction, variant.anneal_fraction, variant.anneal_lr_factor) == (0.01, 0.25, 0.01)
    assert (paper.val_fraction, paper.anneal_fraction) == (0.0, 0.0)  # the paper's networks: the reference's schedule, its last model
    assert variant.restart_roughness and not paper.restart_roughness
    assert not resolve(RelightConfig(method="nerd", encoding="hashgrid", anneal_fraction=0.0)).restart_roughness  # it waits for the annealing
    steps = variant.schedule_paper_steps
    assert nerd_fit.schedule(0.75, steps, 0.25, 0.01)["lr_factor"] == nerd_fit.schedule(0.75, steps)["lr_factor"]  # annealing starts at 3/4
    assert nerd_fit.schedule(1.0, steps, 0.25, 0.01)["lr_factor"] == pytest.approx(0.01 * nerd_fit.schedule(1.0, steps)["lr_factor"], rel=1e-9)
    drawn, step_off = [], nerd_fit.step_off_held_out

    def recording(exclude, view, v, u, width):
        u = step_off(exclude, view, v, u, width)
        drawn.append(exclude[view, v, u])
        return u

    monkeypatch.setattr(nerd_fit, "step_off_held_out", recording)
    tiny = {**{k: v for k, v in TINY.items() if k != "net_depth"}, "hash_levels": 4, "log2_table_size": 12, "val_fraction": 0.05, "eval_every": 20, "checkpoint_every": 20}
    run = tmp_path / "run"
    first = train(two_light_scene, run, RelightConfig(steps=60, encoding="hashgrid", **tiny), quiet=True)
    assert first.kept_step is not None and len(drawn) == 60 and not torch.cat(drawn).any()
    assert first.roughness_restart_step == 45  # the first step at 3/4 of the run, where annealing begins
    ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    gen = torch.Generator().manual_seed(0)
    for k, v in ckpt["state"]["model"].items():
        if "grid.tables" in k:
            ckpt["state"]["model"][k] = v + torch.randn(v.shape, generator=gen)
    save_checkpoint(run / CHECKPOINT_NAME, ckpt)
    again = train(two_light_scene, run, RelightConfig(steps=80, encoding="hashgrid", **tiny), quiet=True)
    evals = [r for r in JsonlLog(run / LOG_NAME).read() if r.get("eval")]
    best = max(evals, key=lambda r: r["val_psnr"])
    assert again.kept_step == best["step"] == first.kept_step <= 60 and evals[-1]["val_psnr"] < best["val_psnr"] - 1.0
    assert again.roughness_restart_step == 45  # restarted once: the resume does not restart it again at 3/4 of 80 steps
    factor = nerd_fit.schedule(79 / 80, steps, 0.25, 0.01)["lr_factor"]  # the rate of the last step (79 of 80)
    groups = load_checkpoint(run / CHECKPOINT_NAME)["state"]["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([TINY["lr"] * factor, variant.hash_lr * factor], rel=1e-6)

    views = load_relight_views(two_light_scene, "train", "cpu").views
    n_val = round(0.05 * views.images[..., 0].numel())
    _, val = nerd_fit.holdout_pixels(views, n_val, torch.Generator().manual_seed(RelightConfig().seed + 2))
    frame_set, _ = light_sets(list(views.lights))
    for loaded, logged in [(load_run(run), best["val_psnr"]), (load_run(run, weights="last"), evals[-1]["val_psnr"])]:
        pred = torch.empty_like(val.colors)
        with torch.no_grad():
            for i in range(len(val.colors)):
                out = loaded.model.render_rays(val.origins[i:i + 1], val.dirs[i:i + 1], light=loaded.model.light(frame_set[int(val.view[i])]), differentiable=False)
                pred[i] = nerd_fit.rendered_display(out, 1.0, views.background, False)[0]
        assert float(-10 * torch.log10((pred - val.colors).square().mean())) == pytest.approx(logged, abs=1e-3)


def test_resume_continues(fitted, tmp_path):
    data, run = fitted
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = train(data, copy, RelightConfig(steps=STEPS + 3, **TINY), quiet=True)
    assert result.fit.resumed_from == STEPS and result.fit.step == STEPS + 3


def test_resumed_run_matches_the_uninterrupted_one(two_light_scene, tmp_path, one_thread, monkeypatch, assert_adam_close):
    """A 6-step run interrupted (SIGINT) during step 3 and run again ends with the weights of the
    uninterrupted run: the first resumed step's loss bit for bit (weights, optimiser, schedule and
    random draws resume), the final weights to float rounding amplified by Adam. The rounding: MKL
    picks its kernels by the buffers' memory alignment, which a new process lays out differently, so
    the double-backward gradients differ in the last bits (MKL_CBWR=COMPATIBLE shrinks the largest
    final difference from 2.3e-5 to 1.5e-8), and Adam turns a last-bit change of a ~0 gradient into
    a fraction of a step. Measured: 0.01 % of the elements off rtol 1e-4, none by more than 0.2 % of
    ``lr`` (0.3 % and 0.5 % with latent_l2 0.1); the same resume with Adam's moments dropped: 93 %,
    4.5 ``lr``."""
    import os
    import signal

    import physinv.relight.nerd_fit as nerd_fit
    from physinv.core.train import load_checkpoint

    cfg = {**TINY, "checkpoint_every": 100, "log_every": 1}
    train(two_light_scene, tmp_path / "once", RelightConfig(steps=6, **cfg), quiet=True)
    schedule, calls = nerd_fit.schedule, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C: the step finishes, a checkpoint is written
        return schedule(*args)

    monkeypatch.setattr(nerd_fit, "schedule", interrupted)
    first = train(two_light_scene, tmp_path / "twice", RelightConfig(steps=6, **cfg), quiet=True)
    assert first.fit.stopped_by == "interrupt" and first.fit.step == 3
    monkeypatch.setattr(nerd_fit, "schedule", schedule)
    again = train(two_light_scene, tmp_path / "twice", RelightConfig(steps=6, **cfg), quiet=True)
    assert again.fit.resumed_from == 3 and again.fit.step == 6
    a = load_checkpoint(tmp_path / "once" / "checkpoint.pt")["state"]["model"]
    b = load_checkpoint(tmp_path / "twice" / "checkpoint.pt")["state"]["model"]
    logs = [[json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("once", "twice")]
    assert [r["loss"] for r in logs[0] if r["step"] == 4] == [r["loss"] for r in logs[1] if r["step"] == 4]  # the first resumed step: bit for bit
    assert_adam_close(b, a, max_abs=0.02 * cfg["lr"], max_fraction=0.02, atol=1e-6)


def test_fit_eval_render_edit_export_cli(fitted, tmp_path, run_cli):
    data, run = fitted

    small = ["--steps", "2", "--batch-rays", "64", "--device", "cpu", "--quiet"]
    toml = tmp_path / "tiny.toml"
    toml.write_text("net_width = 16\nnet_depth = 2\ncoarse_samples = 8\nfine_samples = 8\n")
    out = run_cli(["relight", "fit", str(data), "--method", "nerd", "--out", str(tmp_path / "cli_run"), "--config", str(toml), *small])
    assert out["method"] == "nerd" and out["step"] == 2
    metrics = run_cli(["relight", "eval", str(run), "--split", "relight", "--device", "cpu"])
    assert metrics["views"] == 2 and "psnr_no_relight" in metrics and metrics["lights_used"]["fitted"] == 2
    out = run_cli(["relight", "render", str(run), "--light", "sky1", "--orbit", "2", "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert out["frames"] == 2 and out["light"] == "learnt (sky1)" and (tmp_path / "r" / "rgb.gif").is_file()
    out = run_cli(["relight", "render", str(run), "--envmap", str(data / "envmaps" / "test_light.exr"), "--orbit", "1", "--out", str(tmp_path / "u"), "--device", "cpu"])
    assert "light_fit_rel_l2" in out
    out = run_cli(["relight", "edit", str(run), "--albedo", "1,0,0", "--metallic", "1", "--roughness", "0.3", "--orbit", "1", "--out", str(tmp_path / "e"), "--device", "cpu"])
    assert out["edit"]["metallic"] == [1.0] and (tmp_path / "e" / "edit_000.png").is_file()
    out = run_cli(["relight", "export", str(run), "--out", str(tmp_path / "m.ply"), "--res", "24", "--level", "1", "--device", "cpu"])
    import trimesh

    mesh = trimesh.load(tmp_path / "m.ply")
    assert len(mesh.vertices) == out["vertices"] > 0 and mesh.visual.vertex_colors.shape[1] == 4
    assert out["lights"] == ["sky0", "sky1"] and (tmp_path / "m_light.json").is_file() and (tmp_path / "m_light_1.exr").is_file()


def test_bad_input(fitted, tmp_path, cli_error):
    data, run = fitted
    line = cli_error(["relight", "edit", str(run), "--specular", "0.5", "--orbit", "1", "--out", str(tmp_path / "e"), "--device", "cpu"])
    assert line == "physinv: error: --specular: a NeRD run has no separate specular albedo (use --metallic, --roughness)"
    line = cli_error(["relight", "render", str(run), "--light", "sky7", "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert line == "physinv: error: --light: 'sky7' is not a learnt illumination of this run (named: sky0, sky1)"
    bad = tmp_path / "data"
    shutil.copytree(data, bad)
    meta = json.loads((bad / "transforms_train.json").read_text())
    meta["frames"][2]["ev100"] = "bright"
    (bad / "transforms_train.json").write_text(json.dumps(meta))
    line = cli_error(["relight", "fit", str(bad), "--method", "nerd", "--out", str(tmp_path / "run"), "--steps", "1", "--device", "cpu", "--quiet"])
    assert line == f"physinv: error: {bad / 'transforms_train.json'}: frames[2].ev100: expected a number (or positive f_number, exposure_time, iso)"
    line = cli_error(["relight", "fit", str(data), "--method", "nerd", "--encoding", "hash", "--out", str(tmp_path / "run"), "--steps", "1", "--device", "cpu", "--quiet"])
    assert line == "physinv: error: encoding: unknown encoding 'hash' (known: frequency, hashgrid)"
    line = cli_error(["relight", "fit", str(data), "--encoding", "hashgrid", "--out", str(tmp_path / "run"), "--steps", "1", "--device", "cpu", "--quiet"])
    assert line == "physinv: error: encoding: 'hashgrid' is a NeRD option (--method nerd); PhySG's networks take Fourier features only"
    toml = tmp_path / "grid.toml"
    config_errors = [  # (TOML, --method nerd?, the one-line error)
        ('encoding = "hashgrid"\nhash_features = 3\n', True, "hash_features: must be 1, 2, 4 or 8, got 3"),
        ("val_fraction = 1.0\n", True, "val_fraction: must be in [0, 1), got 1.0"),
        ("anneal_lr_factor = 0.0\n", True, "anneal_lr_factor: must be in (0, 1], got 0.0"),
        ('encoding = "hashgrid"\nanneal_fraction = 0.0\nrestart_roughness = true\n', True,
         "restart_roughness: restarts the roughness when annealing begins; set anneal_fraction > 0 (or restart_roughness = false)"),
        ("restart_roughness = true\n", False, "restart_roughness: a NeRD option (--method nerd); PhySG's roughness is one global parameter"),
        ("val_fraction = 0.01\n", False, "val_fraction: 0.01 is a NeRD option (--method nerd); PhySG keeps its last model"),
    ]
    for text, nerd, message in config_errors:
        toml.write_text(text)
        method = ["--method", "nerd"] if nerd else []
        line = cli_error(["relight", "fit", str(data), *method, "--config", str(toml), "--out", str(tmp_path / "run"), "--steps", "1", "--device", "cpu", "--quiet"])
        assert line == f"physinv: error: {message}"
    assert not (tmp_path / "run").exists()  # checked before anything is written
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    line = cli_error(["relight", "fit", str(data), "--method", "nerd", "--out", str(run), "--steps", "1", "--lobes", "12", "--device", "cpu", "--quiet"])
    assert line.startswith(f"physinv: error: {run / 'checkpoint.pt'}: state.model: does not match this run's configuration")
    line = cli_error(["relight", "fit", str(data), "--method", "nerf", "--out", str(tmp_path / "x"), "--device", "cpu"])
    assert line == "physinv: error: --method: unknown method 'nerf' (known: physg, nerd)"
