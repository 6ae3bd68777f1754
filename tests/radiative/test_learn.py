"""Data generation (resumable, deterministic), CNN / U-Net / V-Net training and evaluation, inversion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from physinv.cli import main
from physinv.errors import PhysinvError
from physinv.radiative.data import DatasetSpec, generate_dataset, load_dataset, occupancy, sample_creneaux, sample_fields
from physinv.radiative.invert import InvertSpec, invert_density, total_variation
from physinv.radiative.learn import DensityVNet, score

torch.set_num_threads(1)


def run_cli(argv, capsys):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_samplers():
    spec = DatasetSpec(kind="creneaux")
    gen = torch.Generator().manual_seed(0)
    rho, targets = sample_creneaux(gen, 16, 32, spec)
    assert rho.shape == (16, 32, 32) and targets.shape == (16, 3)
    # the bump sits where the targets say, with the height they say
    for b in range(4):
        j, i = int(targets[b, 0] * 32), int(targets[b, 1] * 32)
        assert rho[b, i, j].item() == pytest.approx(spec.background + targets[b, 2].item())
        assert rho[b].min().item() == pytest.approx(spec.background)
    labels = occupancy(targets, spec)
    assert labels.shape == (16, 64) and labels.sum(dim=1).min() >= 4  # a 0.25-wide square meets >= 2×2 cells of 1/8
    fields = sample_fields(gen, 8, 32, DatasetSpec())
    assert fields.min() >= 0.1 - 1e-9 and fields.max() <= 1.5 + 1e-9 and fields.std() > 0.1


def test_dataset_is_resumable_and_deterministic(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["radiative", "dataset", "--kind", "creneaux", "--n", "6", "--batch", "4", "--grid", "16",
            "--t-final", "0.001", "--k", "2", "--out", str(out), "--device", "cpu"]
    summary = run_cli(args, capsys)
    assert summary["generated_shards"] == 2
    arrays, meta = load_dataset(out)
    assert arrays["obs"].shape == (6, 4, 16, 16) and arrays["targets"].shape == (6, 3) and arrays["labels"].shape == (6, 64)
    first = np.load(out / "shard_00001.npz")["obs"].copy()
    (out / "shard_00001.npz").unlink()
    summary = run_cli(args, capsys)
    assert summary["generated_shards"] == 1 and summary["skipped_shards"] == 1
    np.testing.assert_array_equal(np.load(out / "shard_00001.npz")["obs"], first)
    with pytest.raises(SystemExit) as exc:
        main([*args[:13], "3", *args[14:]])
    assert exc.value.code == 2
    assert "k: this folder holds a dataset made with other settings" in capsys.readouterr().err


def test_boundary_observations_shape(tmp_path):
    spec = DatasetSpec(kind="fields", n=2, batch=2, grid=16, observe="boundary", t_final=0.001, boundary_samples=8)
    generate_dataset(spec, tmp_path / "b", "cpu", quiet=True)
    arrays, _ = load_dataset(tmp_path / "b")
    obs = arrays["obs"]
    assert obs.shape == (2, 4, 8, 16)
    assert obs[:, 0].mean() > obs[:, 1].mean()  # the left edge (source) sees more than the right


def test_train_and_eval_cli(tmp_path, capsys):
    data = tmp_path / "cr"
    generate_dataset(DatasetSpec(kind="creneaux", n=20, batch=20, grid=16, t_final=0.001, k=2), data, "cpu", quiet=True)
    for model in ("cnn", "cnn-class"):
        run = tmp_path / model
        m = run_cli(["radiative", "train", str(data), "--model", model, "--out", str(run), "--steps", "3",
                     "--batch-size", "4", "--device", "cpu"], capsys)
        assert m["steps"] == 3 and (run / "checkpoint.pt").is_file()
        e = run_cli(["radiative", "eval", str(run), str(data), "--device", "cpu"], capsys)
        # (3 steps: the plumbing, not the learning, is under test here; see the U-Net test for that)
        assert (e["r2"] <= 1.0) if model == "cnn" else (0.0 <= e["binary_accuracy"] <= 1.0), e
        assert json.loads((run / "metrics.json").read_text()) == e
    # resuming a finished run continues the step count
    m = run_cli(["radiative", "train", str(data), "--model", "cnn", "--out", str(tmp_path / "cnn"), "--steps", "5",
                 "--batch-size", "4", "--device", "cpu"], capsys)
    assert m["steps"] == 5
    # --steps 0 means no step (it used to become 2000): the untrained network is scored
    m = run_cli(["radiative", "train", str(data), "--model", "cnn", "--out", str(tmp_path / "zero"), "--steps", "0",
                 "--batch-size", "4", "--device", "cpu"], capsys)
    assert m["steps"] == 0
    # the inversion draws nothing at random: no --seed to accept and ignore
    with pytest.raises(SystemExit) as exc:
        main(["radiative", "invert", str(data), "--seed", "1", "--steps", "0"])
    assert exc.value.code == 2 and "No such option: --seed" in capsys.readouterr().err
    # fine-tuning starts a new run from the weights of another
    m = run_cli(["radiative", "train", str(data), "--model", "cnn", "--out", str(tmp_path / "ft"), "--steps", "2",
                 "--batch-size", "4", "--init-from", str(tmp_path / "cnn"), "--device", "cpu"], capsys)
    assert m["steps"] == 2
    # a dense model on a créneaux set is fine; a CNN on a fields set is refused
    fields = tmp_path / "f"
    generate_dataset(DatasetSpec(kind="fields", n=4, batch=4, grid=16, t_final=0.001, k=2), fields, "cpu", quiet=True)
    with pytest.raises(SystemExit) as exc:
        main(["radiative", "train", str(fields), "--model", "cnn", "--out", str(tmp_path / "x"), "--steps", "1", "--device", "cpu"])
    assert exc.value.code == 2 and "needs a créneaux dataset" in capsys.readouterr().err


def test_unet_learns_a_tiny_set_and_vnet_builds(tmp_path):
    from physinv.radiative.learn import TrainSpec, evaluate_run, train_model

    data = tmp_path / "f"
    # t_final = 0.02 sh: the radiation has crossed the 16x16 domain, so the signals carry the density
    # (at 0.002 sh they barely leave the source and a held-out map cannot be told from the mean)
    generate_dataset(DatasetSpec(kind="fields", n=80, batch=80, grid=16, t_final=0.02, k=2), data, "cpu", quiet=True)
    train_model(data, tmp_path / "u", TrainSpec(model="unet", steps=250, batch_size=16, lr=3e-3, eval_every=1000), "cpu", quiet=True)
    m = evaluate_run(tmp_path / "u", data, "test", "cpu")
    # the 8 held-out maps: far better than the mean predictor (R^2 = 0); 0.90 measured
    assert m["split"] == "test" and m["n"] == 8 and m["r2"] > 0.6, m
    assert (tmp_path / "u" / "plots" / "eval_test.png").is_file()
    net = DensityVNet(4)
    assert net(torch.randn(2, 4, 16, 16)).shape == (2, 1, 16, 16)
    assert isinstance(DensityVNet(6).adapter, torch.nn.Conv2d)  # 16 % 6 != 0: 1×1 adapter


def test_class_weights_balance_each_cell():
    from physinv.radiative.learn import positive_weights

    labels = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    assert positive_weights(labels, "none") is None
    # cell 0: 3 positives, 1 negative -> 1 (never below); cell 1: 1 vs 3 -> 3; cell 2: never positive -> 4 / 1
    assert positive_weights(labels, "balanced").tolist() == [1.0, 3.0, 4.0]
    with pytest.raises(PhysinvError, match="--class-weight: must be none or balanced, got 'x'"):
        positive_weights(labels, "x")


def test_scores():
    truth = torch.rand(4, 1, 16, 16) + 0.5
    s = score("vnet", truth.clone(), truth)
    assert s["r2"] == pytest.approx(1.0) and s["relative_l2"] == pytest.approx(0.0, abs=1e-7) and s["ssim"] == pytest.approx(1.0, abs=1e-4)
    bad = score("vnet", torch.full_like(truth, truth.mean().item()), truth)
    assert abs(bad["r2"]) < 1e-5 and bad["ssim"] < 0.2
    t = torch.rand(50, 3)
    assert score("cnn", t, t)["r2"] == pytest.approx(1.0)
    labels = (torch.rand(10, 64) > 0.5).float()
    assert score("cnn-class", labels * 2 - 1, labels) == {"binary_accuracy": 1.0, "exact_match": 1.0}


def test_inversion_through_the_solver_recovers_a_small_density(tmp_path):
    spec = DatasetSpec(kind="fields", grid=8, t_final=0.006, k=4, fixed_point_iters=3, cfl=0.9)
    gen = torch.Generator().manual_seed(4)
    truth = sample_fields(gen, 2, 8, spec)
    from physinv.radiative.data import observe_batch

    with torch.no_grad():
        obs = observe_batch(truth, spec)
    start = torch.full_like(truth, 0.8)
    rho, metrics = invert_density(obs, spec, start, InvertSpec(steps=15, lr=0.08, tv=1e-3, dtype="float64", solver_chunk=None), tmp_path, truth=truth, quiet=True)
    err0 = (torch.linalg.vector_norm(start - truth) / torch.linalg.vector_norm(truth)).item()
    err1 = (torch.linalg.vector_norm(rho - truth) / torch.linalg.vector_norm(truth)).item()
    assert metrics["misfit_final"] < 0.2 * metrics["misfit_initial"]
    assert err1 < 0.8 * err0, (err0, err1)
    assert (rho > 0).all()
    flat = torch.ones(1, 8, 8)
    assert total_variation(flat).item() == pytest.approx(1e-4)
    step = torch.ones(1, 8, 8)
    step[..., 4:] = 2.0
    assert total_variation(step).item() > total_variation(flat).item() + 0.1


def test_invert_cli_bad_index(tmp_path, capsys):
    data = tmp_path / "f"
    generate_dataset(DatasetSpec(kind="fields", n=2, batch=2, grid=8, t_final=0.0005, k=1), data, "cpu", quiet=True)
    with pytest.raises(SystemExit) as exc:
        main(["radiative", "invert", str(data), "--index", "7", "--out", str(tmp_path / "i"), "--device", "cpu"])
    assert exc.value.code == 2
    assert "--index: out of range for 2 samples" in capsys.readouterr().err
