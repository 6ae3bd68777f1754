"""Learning the inverse map: the presentation's CNN baselines and the V-Net.

* ``cnn``: regression of a créneau's (x, y, height) from the observations (slides: R² 98.81 %);
* ``cnn-class``: multi-label classification of the coarse cells the créneau covers (slides:
  "Bin. Acc." 98.86 %); we also report the exact-match rate (all 64 labels right) as the strict
  score, our reading of the slides' "Pers. Sév.";
* ``unet``: the same map with MONAI's residual ``UNet`` (channels 16–128, 0.4 M parameters): the
  V-Net's ideas (residual stages, skip connections, strided down-sampling) at 1/20 of its cost.
  MONAI's 2D V-Net has 9.4 M parameters and 5 × 5 kernels; on the 2 shared CPU cores of this
  project one batch of 8 takes ~5 s, so the accuracy experiments use ``unet``; ``vnet`` is the
  faithful model for a GPU.
* ``vnet``: observations → the whole density map, MONAI's ``VNet(spatial_dims=2)``. MONAI's input
  block repeats the input channels up to 16, so it needs ``16 % in_channels == 0``; other channel
  counts go through a 1 × 1 convolution to 16 channels first. Dropout is off by default
  (regression of a smooth field; MONAI's 0.5 default is meant for segmentation).

The slides do not give the CNN's layers; ours is four blocks (16-32-64-128 channels) of two
conv–BN–ReLU layers and a max pooling, a global average and a two-layer head. Inputs are standardised per channel and targets per column
(CNN) or globally (V-Net) with statistics of the training split, stored in the checkpoint.
Training goes through :func:`physinv.core.train.fit` (resume, ``--max-minutes``), in epochs
without replacement over the training split (``DistributedSampler``, its epoch advanced), and
runs unchanged under ``torchrun`` (:mod:`physinv.core.distributed`): ``batch_size`` is the global
batch, split over the processes; DistributedDataParallel; BatchNorm statistics of the global batch;
the precise-BN re-estimation (``torch.optim.swa_utils.update_bn``) over all ranks' data; rank 0
writes. A step's global batch and augmentation do not depend on the number of processes, so a
checkpoint resumes on any other number of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from physinv.errors import PhysinvError, input_error

MODELS = ("vnet", "unet", "cnn", "cnn-class")
DENSE = ("vnet", "unet")  # models that predict the whole density map


class ConvBackbone(nn.Module):
    """(B, C, N, N) -> (B, width) features: 4 × [conv3-BN-ReLU, conv3-BN-ReLU, maxpool], global mean."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = w
        self.body = nn.Sequential(*layers)
        self.width = c

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(-2, -1))


class CreneauxCNN(nn.Module):
    """CNN baseline: observations (B, C, N, N) -> (B, n_out) (regression targets or label logits)."""

    def __init__(self, in_channels: int, n_out: int):
        super().__init__()
        self.backbone = ConvBackbone(in_channels)
        self.head = nn.Sequential(nn.Linear(self.backbone.width, 128), nn.ReLU(inplace=True), nn.Linear(128, n_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


class DensityVNet(nn.Module):
    """MONAI ``VNet(spatial_dims=2)``: observations (B, C, N, N) -> standardised density (B, 1, N, N); N % 16 == 0."""

    def __init__(self, in_channels: int, dropout: float = 0.0):
        super().__init__()
        from monai.networks.nets import VNet

        self.adapter: nn.Module = nn.Identity()
        vnet_in = in_channels
        if 16 % in_channels != 0:
            self.adapter = nn.Conv2d(in_channels, 16, 1)
            vnet_in = 16
        self.vnet = VNet(
            spatial_dims=2, in_channels=vnet_in, out_channels=1,
            dropout_prob_down=dropout or None, dropout_prob_up=(dropout or None, dropout), dropout_dim=2,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.vnet(self.adapter(x))


def prepare_inputs(obs: np.ndarray | Tensor, grid: int) -> Tensor:
    """Observations -> network input (B, C, N, N): snapshots as they are; boundary series (B, 4, S, N)
    are resampled along time to N so the same image networks apply."""
    x = torch.as_tensor(obs).float()
    if x.shape[-2] != grid:
        x = torch.nn.functional.interpolate(x, size=(grid, x.shape[-1]), mode="bilinear", align_corners=True)
    return x


class DensityUNet(nn.Module):
    """MONAI residual ``UNet`` (2D, channels 16-32-64-128): observations -> standardised density (B, 1, N, N); N % 8 == 0."""

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=in_channels, out_channels=1, channels=channels,
                         strides=(2,) * (len(channels) - 1), num_res_units=2, norm="batch")

    def forward(self, x: Tensor) -> Tensor:
        return self.unet(x)


def build_model(name: str, in_channels: int, n_out: int = 3) -> nn.Module:
    """The network ``name`` (one of :data:`MODELS`) on ``in_channels`` observation channels; ``n_out``
    outputs for the CNNs (3 for (x, y, height), the number of coarse cells for ``cnn-class``)."""
    if name == "vnet":
        return DensityVNet(in_channels)
    if name == "unet":
        return DensityUNet(in_channels)
    if name in ("cnn", "cnn-class"):  # same network: regression or logits of the coarse cells
        return CreneauxCNN(in_channels, n_out)
    raise PhysinvError(f"--model: must be one of {', '.join(MODELS)}, got '{name}'")


@dataclass
class TrainSpec:
    model: str = "vnet"
    steps: int = 2000
    max_minutes: float | None = None
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    eval_every: int = 250
    checkpoint_every: int = 100
    init_from: str | None = None  # fine-tune: start from this run's weights and input/target statistics
    class_weight: str = "none"  # cnn-class: "balanced" weighs each cell's positives by its negatives/positives ratio


def _targets(model: str, arrays: dict[str, np.ndarray], data: Path) -> np.ndarray:
    if model in DENSE:
        return arrays["rho"][:, None]
    key = "targets" if model == "cnn" else "labels"
    if key not in arrays:
        raise input_error(data, key, f"--model {model} needs a créneaux dataset (--kind creneaux)")
    return arrays[key].astype(np.float32)


class Normaliser:
    """Per-channel input and per-column (or global) target standardisation from the training split."""

    def __init__(self, x_mean: Tensor, x_std: Tensor, y_mean: Tensor, y_std: Tensor):
        self.x_mean, self.x_std, self.y_mean, self.y_std = x_mean, x_std, y_mean, y_std

    @classmethod
    def fit(cls, x: Tensor, y: Tensor, model: str) -> "Normaliser":
        x_mean = x.mean(dim=(0, 2, 3), keepdim=True)[0]
        x_std = x.std(dim=(0, 2, 3), keepdim=True)[0].clamp_min(1e-6)
        if model in DENSE:
            y_mean, y_std = y.mean().reshape(1), y.std().reshape(1).clamp_min(1e-6)
        elif model == "cnn":
            y_mean, y_std = y.mean(dim=0), y.std(dim=0).clamp_min(1e-6)
        else:  # labels stay 0/1
            y_mean, y_std = torch.zeros(y.shape[1]), torch.ones(y.shape[1])
        return cls(x_mean, x_std, y_mean, y_std)

    def state(self) -> dict[str, Tensor]:
        return {"x_mean": self.x_mean, "x_std": self.x_std, "y_mean": self.y_mean, "y_std": self.y_std}

    @classmethod
    def from_state(cls, s: dict[str, Tensor]) -> "Normaliser":
        return cls(s["x_mean"], s["x_std"], s["y_mean"], s["y_std"])

    def inputs(self, x: Tensor) -> Tensor:
        return (x - self.x_mean.to(x)) / self.x_std.to(x)

    def targets(self, y: Tensor) -> Tensor:
        shape = (1, -1) if y.ndim == 2 else (1, 1, 1, 1)
        return (y - self.y_mean.to(y).reshape(shape)) / self.y_std.to(y).reshape(shape)

    def untarget(self, y: Tensor) -> Tensor:
        shape = (1, -1) if y.ndim == 2 else (1, 1, 1, 1)
        return y * self.y_std.to(y).reshape(shape) + self.y_mean.to(y).reshape(shape)


def _load_xy(data: Path, model: str, split: str) -> tuple[Tensor, Tensor, dict[str, Any]]:
    from physinv.radiative.data import load_dataset, split_indices

    arrays, meta = load_dataset(data)
    grid = int(meta["spec"]["grid"])
    idx = split_indices(len(arrays["rho"]), split)
    x = prepare_inputs(arrays["obs"][idx], grid)
    y = torch.as_tensor(_targets(model, arrays, data)[idx]).float()
    return x, y, meta


def positive_weights(labels: Tensor, mode: str) -> Tensor | None:
    """BCE weights of the positives per label (n_labels,): None for ``none``; for ``balanced``,
    negatives / positives in the training labels (B, n_labels), in [1, 50] (a cell a créneau
    covers in ~10 % of the samples weighs ~9). Most coarse cells are empty in most samples."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise PhysinvError(f"--class-weight: must be none or balanced, got '{mode}'")
    pos = labels.sum(dim=0)
    return ((len(labels) - pos) / pos.clamp_min(1.0)).clamp(1.0, 50.0)


def _ssim_range(model: str, meta: dict[str, Any]) -> float | None:
    """SSIM data range of a density model on a ``fields`` data set (its ρ range); None elsewhere
    (:func:`score` then takes the truth's range)."""
    return float(meta["spec"]["rho_max"] - meta["spec"]["rho_min"]) if model in DENSE and meta["spec"]["kind"] == "fields" else None


def recalibrate_batchnorm(model: nn.Module, inputs: Tensor, device: torch.device, seed: int, batches: int = 40,
                          batch: int = 32) -> None:
    """Re-estimate BatchNorm running statistics as plain averages over ``batches`` training batches
    ("precise BN", ``torch.optim.swa_utils.update_bn``). The exponential averages kept during
    training lag behind the weights while the learning rate is high, which made held-out scores
    jump between evaluations.

    The global batches (``batch`` samples each, drawn with ``seed``) are the same for any number of
    processes; each rank feeds its share (:func:`physinv.core.distributed.rank_slice`), and with
    the global-batch BatchNorm of :func:`physinv.core.distributed.sync_batchnorm` the statistics are
    those of the whole batch, so every rank ends with what one process computes alone. All ranks
    must call this together."""
    from torch.optim.swa_utils import update_bn

    from physinv.core.distributed import rank_slice

    gen = torch.Generator().manual_seed(seed)
    draws = [torch.randint(0, len(inputs), (min(batch, len(inputs)),), generator=gen) for _ in range(batches)]
    update_bn([inputs[rank_slice(idx)].to(device) for idx in draws], model)
    model.eval()


def predict(model: nn.Module, norm: Normaliser, x: Tensor, device: torch.device, batch: int = 32) -> Tensor:
    """Model outputs in physical units (regression) or logits (classification), on the CPU."""
    model.eval()
    outs = []
    with torch.no_grad():
        for part in x.split(batch):
            outs.append(norm.untarget(model(norm.inputs(part.to(device)))).cpu())
    return torch.cat(outs)


def score(model_name: str, pred: Tensor, truth: Tensor, rho_range: float | None = None) -> dict[str, float]:
    """Metrics of one model kind: V-Net (R², relative L2, SSIM), CNN (R² per target), classes (accuracy)."""
    from physinv.core.metrics import r2_score, relative_l2, ssim

    if model_name in DENSE:
        rng = rho_range or float(truth.max() - truth.min())
        return {
            "r2": float(r2_score(pred, truth)),
            "relative_l2": float(relative_l2(pred, truth)),
            "ssim": float(ssim(pred[:, 0, :, :, None], truth[:, 0, :, :, None], data_range=rng)),
            "mae": float((pred - truth).abs().mean()),
        }
    if model_name == "cnn":
        per = [float(r2_score(pred[:, j], truth[:, j])) for j in range(truth.shape[1])]
        return {"r2": float(np.mean(per)), "r2_x": per[0], "r2_y": per[1], "r2_height": per[2]}
    hits = (pred > 0).float() == truth
    return {"binary_accuracy": float(hits.float().mean()), "exact_match": float(hits.all(dim=1).float().mean())}


def train_model(data: str | Path, run: str | Path, spec: TrainSpec, device: str = "auto", quiet: bool = False) -> dict[str, Any]:
    """Train ``spec.model`` on the train split of ``data`` into ``run``; returns the held-out metrics."""
    from physinv.core import distributed
    from physinv.core.train import JsonlLog, fit, seed_everything, select_device
    from physinv.io.runs import emit_metrics

    data, run = Path(data), Path(run)
    if spec.model not in MODELS:
        raise PhysinvError(f"--model: must be one of {', '.join(MODELS)}, got '{spec.model}'")
    if spec.class_weight != "none" and spec.model != "cnn-class":
        raise PhysinvError(f"--class-weight: only for --model cnn-class, got --model {spec.model}")
    dev = distributed.setup(select_device(device))
    seed_everything(spec.seed)
    x, y, meta = _load_xy(data, spec.model, "train")
    x_test, y_test, _ = _load_xy(data, spec.model, "test")
    if spec.model in DENSE and x.shape[-1] % 16:
        raise input_error(data, "grid", f"the {spec.model} needs a grid multiple of 16, got {x.shape[-1]}")
    norm = Normaliser.fit(x, y, spec.model)
    ckpt_path = run / "checkpoint.pt"
    init_weights = None
    if ckpt_path.is_file():  # resume: keep the statistics the weights were trained with
        from physinv.core.train import load_checkpoint

        norm = Normaliser.from_state(load_checkpoint(ckpt_path)["extra"]["norm"])
    elif spec.init_from:
        base_model, norm, base_config = load_run(spec.init_from, dev)
        if base_config["model"] != spec.model or base_config["in_channels"] != x.shape[1]:
            raise input_error(spec.init_from, "model", f"--init-from needs a {spec.model} run on {x.shape[1]} channels")
        init_weights = base_model.state_dict()
    per_rank = distributed.split_batch(spec.batch_size)
    steps_per_epoch = len(x) // spec.batch_size
    if steps_per_epoch == 0:
        raise PhysinvError(f"--batch-size: the global batch {spec.batch_size} is larger than the {len(x)} training samples")
    model = build_model(spec.model, x.shape[1], y.shape[1] if y.ndim == 2 else 1).to(dev)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    model = distributed.sync_batchnorm(model, dev)  # statistics of the global batch (same keys: checkpoints stay plain)
    net = distributed.ddp(model, dev)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, spec.steps), eta_min=spec.lr / 20)
    weights = positive_weights(y, spec.class_weight) if spec.model == "cnn-class" else None
    loss_fn = nn.MSELoss() if spec.model != "cnn-class" else nn.BCEWithLogitsLoss(pos_weight=None if weights is None else weights.to(dev))
    xn, yn = norm.inputs(x), norm.targets(y)
    rho_range = _ssim_range(spec.model, meta)
    flip_aug = spec.model in DENSE and meta["spec"]["observe"] == "snapshots"

    epoch_cache: dict[int, list[Tensor]] = {}

    def step_fn(step: int) -> dict[str, float]:
        # epochs without replacement (DistributedSampler, epoch advanced); the global batch of a
        # step does not depend on the number of processes, so any world size resumes any other
        epoch, i = divmod(step, steps_per_epoch)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = distributed.epoch_batches(len(xn), per_rank, epoch, spec.seed)
        idx = epoch_cache[epoch][i]
        model.train()
        xb, yb = xn[idx].to(dev), yn[idx].to(dev)
        if flip_aug:  # the problem is symmetric under y -> -y (source on the whole left edge)
            draw = torch.Generator().manual_seed(spec.seed * 1_000_003 + step)
            flip = distributed.rank_slice(torch.rand(spec.batch_size, generator=draw) < 0.5)
            xb = torch.where(flip.to(dev)[:, None, None, None], xb.flip(-2), xb)
            yb = torch.where(flip.to(dev)[:, None, None, None], yb.flip(-2), yb)
        loss = loss_fn(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.detach(), "lr": sched.get_last_lr()[0]}

    def eval_fn(step: int) -> dict[str, float]:
        sub = slice(0, min(len(x_test), 128))
        momenta = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
        recalibrate_batchnorm(model, xn, dev, seed=step, batches=10)  # every rank takes part
        out = score(spec.model, predict(model, norm, x_test[sub], dev), y_test[sub], rho_range) if distributed.is_main() else {}
        model.load_state_dict({**model.state_dict(), **momenta})  # training continues with its own averages
        return out

    config = {**asdict(spec), "data": str(data), "in_channels": int(x.shape[1]), "grid": int(x.shape[-1]),
              "n_out": int(y.shape[1]) if y.ndim == 2 else 1, "kind": meta["spec"]["kind"], "observe": meta["spec"]["observe"]}
    facts = distributed.describe(spec.batch_size, spec.lr)
    if distributed.is_main():
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        JsonlLog(run / "log.jsonl").write({"event": "start", **facts})
        if facts["world_size"] > 1 and not quiet:
            from physinv.core.train import stderr_console

            stderr_console.print(f"radiative train: {facts['world_size']} processes ({facts['backend']}), global batch "
                                 f"{spec.batch_size} = {facts['world_size']} x {per_rank}, lr {spec.lr:g}")
    result = fit(
        step_fn, run_dir=run, steps=spec.steps, state={"model": model, "opt": opt, "sched": sched},
        max_minutes=spec.max_minutes, checkpoint_every=spec.checkpoint_every, eval_fn=eval_fn,
        eval_every=spec.eval_every, config=config, extra_state=lambda: {"norm": norm.state()},
        desc=f"train {spec.model}", quiet=quiet,
    )
    if result.step > result.resumed_from:  # precise BN statistics, in memory and in the final checkpoint
        from physinv.core.train import load_checkpoint, save_checkpoint

        recalibrate_batchnorm(model, xn, dev, seed=0)
        if distributed.is_main():
            ckpt = load_checkpoint(ckpt_path)
            ckpt["state"]["model"] = model.state_dict()
            save_checkpoint(ckpt_path, ckpt)
        distributed.barrier()
    if not distributed.is_main():
        return {"steps": result.step, "stopped_by": result.stopped_by, "rank": distributed.rank()}
    metrics = {**score(spec.model, predict(model, norm, x_test, dev), y_test, rho_range),
               "steps": result.step, "stopped_by": result.stopped_by, "train_seconds": round(result.elapsed_s, 1),
               "n_train": len(x), "n_test": len(x_test)}
    return emit_metrics(metrics, run)


def load_run(run: str | Path, device: torch.device) -> tuple[nn.Module, Normaliser, dict[str, Any]]:
    """The trained network (eval mode, on ``device``), its normaliser and config from ``<run>/checkpoint.pt``."""
    from physinv.core.train import load_checkpoint

    return _run_from_checkpoint(load_checkpoint(Path(run) / "checkpoint.pt", map_location=device), device)


def _run_from_checkpoint(ckpt: dict[str, Any], device: torch.device) -> tuple[nn.Module, Normaliser, dict[str, Any]]:
    config = ckpt["config"]
    model = build_model(config["model"], config["in_channels"], config["n_out"]).to(device)
    model.load_state_dict(ckpt["state"]["model"])
    model.eval()
    return model, Normaliser.from_state(ckpt["extra"]["norm"]), config


def evaluate_run(run: str | Path, data: str | Path, split: str = "test", device: str = "auto", n_plots: int = 4) -> dict[str, Any]:
    """Metrics of a trained run on a dataset split, and plots of truth / prediction / error."""
    from physinv.core.train import select_device

    dev = select_device(device)
    run, data = Path(run), Path(data)
    model, norm, config = load_run(run, dev)
    x, y, meta = _load_xy(data, config["model"], split)
    if x.shape[1] != config["in_channels"]:
        raise input_error(data, "obs", f"{x.shape[1]} observation channels, the run was trained on {config['in_channels']}")
    pred = predict(model, norm, x, dev)
    rho_range = _ssim_range(config["model"], meta)
    metrics = {**score(config["model"], pred, y, rho_range), "model": config["model"], "split": split, "n": len(x)}
    if config["model"] in DENSE:
        metrics["plot"] = str(plot_maps(y[:n_plots, 0], pred[:n_plots, 0], run / "plots" / f"eval_{split}.png"))
    elif config["model"] == "cnn":
        metrics["plot"] = str(plot_scatter(y, pred, ["x", "y", "height"], run / "plots" / f"eval_{split}.png"))
    return metrics


def plot_maps(truth: Tensor, pred: Tensor, path: Path, titles: tuple[str, str, str] = ("truth ρ", "prediction", "error")) -> Path:
    """Rows of (truth, prediction, error) density maps, (S, N, N) each, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = len(truth)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.4 * rows), dpi=90, squeeze=False)
    lo, hi = float(truth.min()), float(truth.max())
    err_max = float((pred - truth).abs().max()) or 1.0
    for r in range(rows):
        for c, (img, kw) in enumerate([(truth[r], dict(vmin=lo, vmax=hi)), (pred[r], dict(vmin=lo, vmax=hi)),
                                       (pred[r] - truth[r], dict(vmin=-err_max, vmax=err_max, cmap="RdBu_r"))]):
            im = axes[r, c].imshow(img.numpy(), origin="lower", extent=(0, 1, 0, 1), **kw)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c])
            fig.colorbar(im, ax=axes[r, c], fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_scatter(truth: Tensor, pred: Tensor, names: list[str], path: Path) -> Path:
    """Prediction vs truth, one panel per target (the slides' "corrélation" figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), dpi=90)
    for j, ax in enumerate(np.atleast_1d(axes)):
        ax.scatter(truth[:, j].numpy(), pred[:, j].numpy(), s=4)
        lo, hi = float(truth[:, j].min()), float(truth[:, j].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(names[j]), ax.set_xlabel("truth"), ax.set_ylabel("prediction")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
