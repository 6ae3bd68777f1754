"""Several processes, one command: the plumbing every pipeline uses under ``torchrun``.

``torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT] -m physinv ...`` starts N
copies of the command per machine and tells each who it is through environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Without them a
command is one process of a world of one and nothing here communicates, so single-process code
paths stay exactly what they were.

What lives here (one place for both the radiative and the instance pipelines):

* :func:`setup`: join the process group from the torchrun variables (NCCL on CUDA, Gloo on CPU)
  with a bounded timeout (``PHYSINV_DIST_TIMEOUT`` seconds, default 120), so a rendezvous that
  cannot be reached is one clear line rather than a hung process; returns this rank's device.
* :func:`rank`, :func:`world_size`, :func:`is_main`: who am I; only the main rank (0) writes
  checkpoints, logs, metrics and index files.
* :func:`any_rank`, :func:`mean_over_ranks`, :func:`reduce_sequence_sum`, :func:`barrier`,
  :func:`merge_index`: the few collectives the fit loop and the data writers need.
* :func:`rank_items`: the items (shards, scenes) of this rank, a strided split, so the result of a
  data generation does not depend on the number of processes (each item has its own seed).
* :func:`sync_batchnorm`: BatchNorm statistics over the global batch (``nn.SyncBatchNorm`` on
  CUDA; on CPU, where torch's SyncBatchNorm refuses to run, :class:`GlobalBatchNorm`), so a run
  on N ranks with per-rank batch b computes what one process computes with batch N·b.
* :func:`ddp`: wrap a model in ``DistributedDataParallel`` when the world has more than one rank.
* :func:`epoch_batches`: this rank's batches of one epoch from ``DistributedSampler`` with its
  epoch advanced: rank r takes the positions r, r + N, ... of each global batch, so the union
  of the ranks' batches is the one-process batch whatever N is (and resuming under another N
  continues the same sequence of global batches).

Checkpoints hold the unwrapped model (no ``module.`` prefix, plain BatchNorm keys) and no
per-rank state, so any world size resumes any other's checkpoint.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from physinv.errors import PhysinvError

DEFAULT_TIMEOUT_S = 120.0


def timeout_seconds() -> float:
    """Collective and rendezvous timeout [s]: ``PHYSINV_DIST_TIMEOUT`` or 120."""
    raw = os.environ.get("PHYSINV_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise PhysinvError(f"PHYSINV_DIST_TIMEOUT: expected seconds, got '{raw}'") from None
    if value <= 0:
        raise PhysinvError(f"PHYSINV_DIST_TIMEOUT: must be > 0, got {raw}")
    return value


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when the command was started on its own)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return max(1, int(raw))
    except ValueError:
        raise PhysinvError(f"WORLD_SIZE: expected an integer, got '{raw}'") from None


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on the rank that writes files (rank 0; the only rank of a single process)."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun described (idempotent); returns this rank's device.

    device: what ``--device`` chose; under several processes on CUDA each rank takes
    ``cuda:LOCAL_RANK``. Raises a one-line :class:`PhysinvError` when the rendezvous
    (``MASTER_ADDR:MASTER_PORT``) is not reached within :func:`timeout_seconds`.
    """
    world = launched_world_size()
    if world == 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise PhysinvError(f"--nproc-per-node: local rank {local} has no CUDA device ({torch.cuda.device_count()} present)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if is_initialized():
        return device
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise PhysinvError(f"{key}: not set; start several processes with torchrun (WORLD_SIZE={world} is set)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timeout_seconds()
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        with _quiet_native_stderr():  # c10d logs every connection retry with a C++ stack; the outcome is what matters
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
            barrier()  # every rank is there: a peer that never arrives fails here, within the timeout
    except PhysinvError:
        raise
    except Exception as err:  # noqa: BLE001 - store/connect/timeout errors of every backend
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PhysinvError(f"rendezvous {where}: not reached within {timeout:g} s "
                           f"(rank {os.environ.get('RANK')} of {world}; {first[:160]})") from None
    atexit.register(shutdown)
    return device


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 (where C++ code logs) to /dev/null for the duration."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized() and world_size() > 1:
        dist.barrier()


def _reduce_device() -> torch.device:
    """NCCL reduces CUDA tensors only; Gloo CPU tensors."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true on every rank when it is true on at least one (a stop request, a deadline);
    one collective for all of them."""
    if world_size() == 1:
        return tuple(bool(f) for f in flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v > 0) for v in t.cpu())


def mean_over_ranks(metrics: Mapping[str, float | Tensor]) -> dict[str, float]:
    """The mean of each scalar metric over the ranks (same keys on every rank; equal batch sizes)."""
    values = {k: float(v) for k, v in metrics.items()}
    if world_size() == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t)
    t = (t / world_size()).cpu()
    return {k: float(v) for k, v in zip(values, t)}


def rank_items(count: int, what: str = "shards", hint: str = "") -> range:
    """The items ``r, r + N, ...`` of ``count`` for this rank r of N; more ranks than items is an
    error (``hint``: how to get more items, for the message)."""
    world = world_size()
    if world > count:
        raise PhysinvError(f"--nproc-per-node: {world} processes for {count} {what}; use at most {count} processes"
                           + (f" ({hint})" if hint else ""))
    return range(rank(), count, world)


def merge_index(path: str | os.PathLike, build: Callable[[], Mapping[str, Any]]) -> None:
    """After every rank made its items: rank 0 writes ``build()`` as JSON to ``path`` atomically
    (temp file + rename: a reader sees the old index or the whole new one), then all ranks go on."""
    import json

    from physinv.core.train import atomic_write_bytes

    barrier()  # every rank's items are on disk
    if is_main():
        atomic_write_bytes(path, (json.dumps(dict(build()), indent=1) + "\n").encode())
    barrier()


def split_batch(global_batch: int) -> int:
    """Per-rank batch of a global batch; it must divide evenly so every world size sees the same global batch."""
    world = world_size()
    if global_batch % world:
        raise PhysinvError(f"--batch-size: the global batch {global_batch} does not split evenly over {world} processes")
    return global_batch // world


def epoch_batches(n: int, per_rank_batch: int, epoch: int, seed: int) -> list[Tensor]:
    """This rank's batches (index tensors) of epoch ``epoch`` over ``n`` items, from a shuffling
    ``DistributedSampler`` with ``set_epoch(epoch)``; only whole global batches are kept, so an
    epoch has ``n // (N * per_rank_batch)`` steps on every rank and for every N."""
    from torch.utils.data import DistributedSampler

    world = world_size()
    steps = n // (world * per_rank_batch)
    if steps == 0:
        raise PhysinvError(f"--batch-size: the global batch {world * per_rank_batch} is larger than the {n} training samples")
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank(), shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    mine = torch.tensor(list(sampler)[: steps * per_rank_batch])
    return list(mine.split(per_rank_batch))


def rank_slice(values: Tensor) -> Tensor:
    """This rank's share of per-sample values drawn for a global batch (positions r, r + N, ...), the
    order :func:`epoch_batches` hands the samples out in."""
    return values[rank():: world_size()]


class _SumOverRanks(torch.autograd.Function):
    """Sum of a tensor over the ranks, differentiable: the gradient of a sum is the sum of the
    ranks' gradients (each rank's loss depends on every rank's share of the sum)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def sum_over_ranks(x: Tensor) -> Tensor:
    """``x`` summed over the ranks, with its gradient (identity alone)."""
    return _SumOverRanks.apply(x) if world_size() > 1 else x


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch over all ranks (CPU/Gloo).

    torch's ``nn.SyncBatchNorm`` runs on GPUs only; this is its CPU counterpart through the
    differentiable :func:`sum_over_ranks` (two passes: mean, then the
    centred second moment, as ``F.batch_norm`` computes them). Same parameters and buffers as
    ``nn.BatchNorm{1,2,3}d``, so its state dict loads into the plain model.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_initialized() and world_size() > 1):
            return super().forward(x)
        all_reduce = sum_over_ranks
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = all_reduce(torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device))
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.reshape(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - factor).add_(factor * mean)
                self.running_var.mul_(1 - factor).add_(factor * unbiased)
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``model`` by one with global-batch statistics when the world has
    several ranks (``nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` on CPU); a no-op alone."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new  # the CPU path: the model is on the CPU
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module


def ddp(model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)`` when the world has several ranks, else ``model`` itself.
    Buffers are not broadcast: with :func:`sync_batchnorm` the running statistics agree already.
    find_unused: some steps leave parameters out of the loss (a detector without positive RoIs)."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    import inspect

    ids = [device.index] if device.type == "cuda" else None
    # the flag was renamed in torch 2.13; both mean: no buffer broadcast before each forward
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else {"broadcast_buffers": False})
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused, **no_sync)


def describe(global_batch: int, lr: float) -> dict[str, Any]:
    """The facts a training log states: processes, backend, global and per-rank batch, learning rate."""
    world = world_size()
    return {"world_size": world, "backend": dist.get_backend() if is_initialized() else "none",
            "global_batch": global_batch, "per_rank_batch": global_batch // world, "lr": lr}


def reduce_sequence_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum over ranks of a list of numbers (counts, sums of a metric)."""
    if world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]
