"""Train, evaluate, save and load NeRF-RCNN (:mod:`physinv.instance.rcnn`) on generated scenes.

``train_detector`` runs through ``physinv.core.train.fit`` (progress, JSON-lines log, atomic
checkpoints, resume, ``--max-minutes``) on scenes written by ``physinv instance make-scenes``,
with the paper's augmentation (§4.1: random flips and rotations by pi/2 about the vertical axis,
each with probability 0.5), and scores held-out scenes: class-agnostic box AP@0.25 / AP@0.5
(detections with score >= 0.05, as AP needs the whole ranking) and the mask IoU (mean over the
ground-truth instances of the IoU of their voxels with the Hungarian-matched detected instance,
detections at the paper's score threshold 0.5).

Under ``torchrun`` (:mod:`physinv.core.distributed`) the ``scenes_per_step`` scenes of a step are
shared out over the processes (DistributedDataParallel, gradients averaged): scene slot j of step s
draws its augmentation and RoI sampling from its own seed (seed, s, j), and the scenes come from a
``DistributedSampler`` advanced every epoch, so a step is the same on any number of processes and a
checkpoint resumes on any other. Rank 0 alone evaluates and writes.

``save_detector`` writes the small shippable file (config + fp16 weights); ``load_detector``
reads it or a training checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from physinv.core.metrics import matched_miou
from physinv.core.train import CHECKPOINT_NAME, fit, load_checkpoint, save_checkpoint, seed_everything
from physinv.errors import input_error
from physinv.instance.boxes import average_precision_3d, box_iou_3d
from physinv.instance.rcnn import NerfRcnn, RcnnConfig, paste_masks
from physinv.instance.scenes import list_scenes, load_scene

# RcnnConfig values of the fields added after detector files were first shipped (a file without
# the field was trained with these)
LEGACY_CONFIG = {"roi_level": 4, "roi_sampling": 2, "rpn_nms_train": 0.3, "rois_per_scene": 32, "positive_fraction": 0.5,
                 "premultiply": False}

DEFAULT_DETECTOR = Path(__file__).resolve().parents[2] / "data" / "instance" / "detector.pt"


def augment(grid: Tensor, labels: Tensor, boxes: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random flips of x, y, z and a rotation by pi/2 about z, each with probability 0.5.

    grid (C, X, Y, Z), labels (X, Y, Z), boxes (G, 6) voxel units -> the same, transformed.
    """
    shape = list(labels.shape)
    for axis in range(3):
        if torch.rand((), generator=gen) < 0.5:
            grid, labels = grid.flip(axis + 1), labels.flip(axis)
            n = shape[axis]
            lo, hi = boxes[:, axis].clone(), boxes[:, axis + 3].clone()
            boxes = boxes.clone()
            boxes[:, axis], boxes[:, axis + 3] = n - hi, n - lo
    if torch.rand((), generator=gen) < 0.5:  # (x, y) -> (y, X - x): a quarter turn about z
        grid, labels = grid.transpose(1, 2).flip(2), labels.transpose(0, 1).flip(1)
        nx = shape[0]
        boxes = torch.stack([boxes[:, 1], nx - boxes[:, 3], boxes[:, 2], boxes[:, 4], nx - boxes[:, 0], boxes[:, 5]], -1)
    return grid.contiguous(), labels.contiguous(), boxes


def _to_tensors(scene: dict, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (
        torch.as_tensor(scene["grid"], device=device),
        torch.as_tensor(scene["labels"].astype(np.int64), device=device),
        torch.as_tensor(scene["boxes"], device=device),
        torch.as_tensor(scene["classes"], device=device),
    )


@torch.no_grad()
def evaluate_detector(model: NerfRcnn, scenes: list[dict], device) -> dict[str, float]:
    """AP@0.25, AP@0.5 (class-agnostic) and mask IoU over scenes (dicts of arrays)."""
    model.eval()
    preds, scores, gts, mious, n_det = [], [], [], [], 0
    best_scores, best_right = [], []  # per ground-truth object: best score at IoU >= 0.5, its class right?
    for scene in scenes:
        grid, labels, boxes, classes = _to_tensors(scene, device)
        det = model.detect(grid, score_threshold=0.05)
        preds.append(det["boxes"].cpu())
        scores.append(det["scores"].cpu())
        gts.append(boxes.cpu())
        if len(boxes):
            hit = box_iou_3d(boxes, det["boxes"]) >= 0.5 if len(det["boxes"]) else torch.zeros(len(boxes), 0, dtype=torch.bool, device=boxes.device)
            s = torch.where(hit, det["scores"][None], torch.zeros_like(hit, dtype=torch.float32)) if hit.shape[1] else torch.zeros(len(boxes), 1, device=boxes.device)
            best, j = s.max(1)
            best_scores += best.tolist()
            right = (det["classes"][j] == classes) if hit.shape[1] else torch.zeros(len(boxes), dtype=torch.bool)
            best_right += [bool(r) for r, b in zip(right.tolist(), best.tolist()) if b > 0]
        keep = det["scores"] >= model.cfg.score_threshold
        final = {k: v[keep] for k, v in det.items()}
        n_det += int(keep.sum())
        pasted = paste_masks(final, tuple(labels.shape))
        mious.append(float(matched_miou(pasted, labels)))
    model.train()
    return {
        "ap25": average_precision_3d(preds, scores, gts, 0.25),
        "ap50": average_precision_3d(preds, scores, gts, 0.5),
        "mask_iou": float(np.nanmean(mious)) if mious else math.nan,
        "detections_per_scene": n_det / max(len(scenes), 1),
        # why detections pass the score threshold or not: the median over ground-truth objects of the
        # best score of a detection overlapping it at IoU >= 0.5 (0 when none), and how often that
        # detection's class is the object's
        "object_score_median": float(np.median(best_scores)) if best_scores else math.nan,
        "class_accuracy": float(np.mean(best_right)) if best_right else math.nan,
        "scenes": len(scenes),
    }


class _SceneLoss(nn.Module):
    """The detector's training loss as a module's forward, the call DistributedDataParallel wraps."""

    def __init__(self, model: NerfRcnn):
        super().__init__()
        self.model = model

    def forward(self, grid: Tensor, boxes: Tensor, classes: Tensor, labels: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        return self.model.loss(grid, boxes, classes, labels, generator=generator)


def train_detector(
    scenes_dir: str | Path, out: str | Path, steps: int = 2000, max_minutes: float | None = None, held_out: int = 10,
    lr: float = 1e-3, device: str | torch.device = "cpu", seed: int = 0, cfg: RcnnConfig | None = None, quiet: bool = False,
    scenes_per_step: int | None = None,
) -> dict:
    """Train on all scenes but the last ``held_out`` and evaluate on those; returns the metrics.

    scenes_per_step: the global batch (None: one scene per process); each step averages the
    gradients of that many scenes."""
    import contextlib

    from physinv.core import distributed
    from physinv.core.train import JsonlLog, LOG_NAME

    files = list_scenes(scenes_dir)
    if len(files) <= held_out:
        raise input_error(Path(scenes_dir) / "index.json", "scenes", f"{len(files)} scenes; need more than the {held_out} held out")
    device = distributed.setup(torch.device(device))
    batch = scenes_per_step or distributed.world_size()
    per_rank = distributed.split_batch(batch)
    seed_everything(seed)
    train = [load_scene(f) for f in files[: len(files) - held_out]]
    test = [load_scene(f) for f in files[len(files) - held_out:]]
    steps_per_epoch = len(train) // batch
    if steps_per_epoch == 0:
        raise input_error(Path(scenes_dir) / "index.json", "scenes", f"{len(train)} training scenes for {batch} scenes per step")
    cfg = cfg or RcnnConfig(grid_res=int(max(train[0]["labels"].shape)))
    model = NerfRcnn(cfg).to(device)
    net = distributed.ddp(_SceneLoss(model), device, find_unused=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)  # linear warm-up over 5 %, then cosine decay to 5 % of lr
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    )

    epoch_cache: dict[int, list[Tensor]] = {}

    def step_fn(step: int) -> dict:
        epoch, i = divmod(step, steps_per_epoch)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = distributed.epoch_batches(len(train), per_rank, epoch, seed)
        slots = range(distributed.rank(), batch, distributed.world_size())  # this rank's places in the global batch
        opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for n, (index, slot) in enumerate(zip(epoch_cache[epoch][i].tolist(), slots)):
            gen = torch.Generator().manual_seed((seed * 1_000_003 + step) * 4099 + slot)
            grid, labels, boxes, classes = _to_tensors(train[index], device)
            grid, labels, boxes = augment(grid, labels, boxes, gen)
            last = n == per_rank - 1  # gradients are averaged over the ranks once, after the last scene
            with contextlib.nullcontext() if last or distributed.world_size() == 1 else net.no_sync():
                losses = net(grid, boxes, classes, labels, gen)
                (losses["total"] / per_rank).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / per_rank
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        return sums

    t0 = time.perf_counter()
    if distributed.is_main():
        JsonlLog(Path(out) / LOG_NAME).write({"event": "start", **distributed.describe(batch, lr)})
    result = fit(
        step_fn, run_dir=out, steps=steps, state={"model": model, "optimizer": opt, "scheduler": sched}, max_minutes=max_minutes,
        checkpoint_every=100, log_every=20, config={"rcnn": asdict(cfg), "scenes": str(scenes_dir), "scenes_per_step": batch},
        desc="NeRF-RCNN", quiet=quiet,
    )
    if not distributed.is_main():
        return {"steps": result.step, "stopped_by": result.stopped_by, "rank": distributed.rank()}
    metrics = evaluate_detector(model, test, device)
    save_detector(model, Path(out) / "detector.pt")
    return {**metrics, "steps": result.step, "train_seconds": round(result.elapsed_s, 1), "stopped_by": result.stopped_by,
            "wall_seconds": round(time.perf_counter() - t0, 1), "train_scenes": len(train)}


def save_detector(model: NerfRcnn, path: str | Path) -> None:
    """The shippable detector: its config and fp16 weights (about 2 MB)."""
    state = {k: v.detach().to(torch.float16).cpu() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"kind": "nerf-rcnn", "config": asdict(model.cfg), "model": state})


def load_detector(path: str | Path | None = None, device: str | torch.device = "cpu") -> NerfRcnn:
    """A detector file written by :func:`save_detector`, or a ``train-detector`` run folder
    (its ``detector.pt``, else its checkpoint); None = the shipped ``data/instance/detector.pt``."""
    path = Path(path) if path is not None else DEFAULT_DETECTOR
    if path.is_dir():
        path = path / "detector.pt" if (path / "detector.pt").is_file() else path / CHECKPOINT_NAME
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") == "nerf-rcnn":
        cfg_dict, state = ckpt.get("config", {}), ckpt.get("model")
    elif "rcnn" in ckpt.get("config", {}):
        cfg_dict, state = ckpt["config"]["rcnn"], ckpt.get("state", {}).get("model")
    else:
        raise input_error(path, None, "not a NeRF-RCNN detector (write one with `physinv instance train-detector`)")
    known = {f.name for f in fields(RcnnConfig)}
    # files written before a field existed were built and trained with its earlier value
    cfg_dict = {**LEGACY_CONFIG, **cfg_dict}
    model = NerfRcnn(RcnnConfig(**{k: v for k, v in cfg_dict.items() if k in known}))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, AttributeError) as err:
        raise input_error(path, "model", f"does not match the NeRF-RCNN architecture ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()
