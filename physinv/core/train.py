"""The one optimisation loop: device choice, seeding, progress, JSON-lines log, atomic
checkpoints (loaded with ``weights_only=True``) and resume after a kill.

Every pipeline trains through :func:`fit`. A killed run loses at most ``checkpoint_every`` steps;
running the same command again resumes from ``<run_dir>/checkpoint.pt`` and continues the step
count. SIGINT/SIGTERM stop cleanly after the current step and write a checkpoint first.

Under ``torchrun`` (see :mod:`physinv.core.distributed`) every rank runs the same loop: the ranks
agree on stopping (a signal or the time budget on any rank stops all after the same step), logged
metrics are averaged over the ranks, and only rank 0 writes the log and the checkpoints.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from physinv.errors import PhysinvError, input_error

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
stderr_console = Console(stderr=True)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PhysinvError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise PhysinvError(f"--device: unknown device '{name}' (auto, cpu, cuda, cuda:N)")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a CPU generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """``torch.save`` of a dict of tensors/plain values, written atomically (temp file + rename)."""
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file is a ``PhysinvError``."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise input_error(path, None, f"not a readable physinv checkpoint ({type(err).__name__})") from None


class JsonlLog:
    """Append-only JSON-lines log; one flushed line per record, so a kill loses nothing written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(to_jsonable(record)) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def to_jsonable(value: Any) -> Any:
    """Tensors, NumPy scalars, Paths and nested containers -> plain JSON-serialisable values."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def progress_bar(disable: bool = False) -> Progress:
    """A rich progress bar on stderr (stdout stays free for the final JSON line)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console,
        disable=disable,
        transient=False,
    )


class _NullLog:
    """The log of a rank that does not write (every rank but 0 under torchrun)."""

    def write(self, record: Mapping[str, Any]) -> None:
        pass


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class KeptWeights:
    """The weights a module had at its best validation score so far: early stopping's kept model.

    ``update(score, step)`` after each validation copies the module's ``state_dict`` (buffers
    included) when the score beats every earlier one (higher is better); ``info`` carries
    whatever else the caller wants remembered with it (e.g. the test PSNR measured at that step).
    Its own ``state_dict`` goes into the run's checkpoint, so a resumed run keeps comparing against
    the same best, and inference loads :attr:`weights` instead of the last step's.
    """

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.score = -float("inf")
        self.step: int | None = None
        self.info: dict[str, float] = {}
        self.weights: dict[str, torch.Tensor] | None = None

    def update(self, score: float, step: int, **info: float) -> bool:
        """Keep the module's current weights if ``score`` is the best so far; True when kept."""
        if not score > self.score:  # NaN never wins
            return False
        self.score, self.step, self.info = float(score), int(step), dict(info)
        self.weights = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "step": self.step, "info": dict(self.info), "weights": self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.score, self.step = float(state["score"]), state["step"]
        self.info, self.weights = dict(state.get("info", {})), state["weights"]


def checkpoint_weights(ckpt: Mapping[str, Any], weights: str = "kept") -> tuple[dict[str, torch.Tensor], int]:
    """The model weights of a :func:`fit` checkpoint and the step they come from. ``weights``:
    ``kept`` — the ones early stopping kept (``extra.kept``, a :class:`KeptWeights` state) where the
    run has them, else the last step's; ``last`` — the last step's."""
    if weights not in ("kept", "last"):
        raise ValueError(f"weights must be 'kept' or 'last', got {weights!r}")
    kept = ckpt.get("extra", {}).get("kept", {})
    if weights == "kept" and kept.get("weights") is not None:
        return kept["weights"], int(kept["step"])
    return ckpt["state"]["model"], int(ckpt["step"])


@dataclass
class FitResult:
    step: int  # number of steps completed in total (across resumes)
    stopped_by: str  # "steps", "time" or "interrupt"
    elapsed_s: float  # training wall time in total (across resumes), seconds
    last: dict[str, float] = field(default_factory=dict)  # the last logged step metrics
    resumed_from: int = 0


@dataclass
class RunProgress:
    """How far a :func:`fit` has come, for schedules that span a run whatever ends it.

    ``fit`` fills ``steps``, ``max_seconds`` and, before every step, ``elapsed_s`` (training
    seconds across resumes)."""

    steps: int = 0
    max_seconds: float | None = None
    elapsed_s: float = 0.0

    def fraction(self, step: int) -> float:
        """Share of the run done before ``step``: the larger of the steps' and the time budget's, in [0, 1]."""
        done = step / self.steps if self.steps > 0 else 1.0
        if self.max_seconds:
            done = max(done, self.elapsed_s / self.max_seconds)
        return min(done, 1.0)


class _StopFlag:
    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:  # second signal: give up at once
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def fit(
    step_fn: Callable[[int], Mapping[str, float]],
    *,
    run_dir: str | Path,
    steps: int,
    state: Mapping[str, Stateful],
    max_minutes: float | None = None,
    checkpoint_every: int = 500,
    log_every: int = 25,
    eval_fn: Callable[[int], Mapping[str, float]] | None = None,
    eval_every: int | None = None,
    config: Mapping[str, Any] | None = None,
    extra_state: Callable[[], Mapping[str, Any]] | None = None,
    load_extra_state: Callable[[Mapping[str, Any]], None] | None = None,
    desc: str = "training",
    resume: bool = True,
    quiet: bool = False,
    progress: RunProgress | None = None,
) -> FitResult:
    """Run ``step_fn(step)`` for ``step = start .. steps-1`` or until ``max_minutes`` have passed.

    state: named objects with ``state_dict``/``load_state_dict`` (modules, optimizers,
        schedulers) saved in every checkpoint and restored on resume.
    step_fn: one optimisation step; returns scalar metrics (floats or 0-d tensors) to log.
    eval_fn: optional evaluation every ``eval_every`` steps and at the end, logged with ``eval``.
    extra_state / load_extra_state: plain tensors or values beyond ``state`` (e.g. an occupancy grid).
    progress: kept up to date before every step (for a schedule over the whole run, :class:`RunProgress`).

    Writes ``<run_dir>/log.jsonl`` (``step``, ``time_s`` = cumulative training seconds, metrics)
    and ``<run_dir>/checkpoint.pt`` every ``checkpoint_every`` steps and at the end, with the CPU
    and (when present) every CUDA device's random state, so a resumed run draws what the
    uninterrupted one would have drawn.
    """
    if steps < 0:
        raise PhysinvError(f"--steps: must be >= 0, got {steps}")
    if max_minutes is not None and max_minutes <= 0:
        raise PhysinvError(f"--max-minutes: must be > 0, got {max_minutes}")
    from physinv.core import distributed

    main = distributed.is_main()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT_NAME
    log = JsonlLog(run_dir / LOG_NAME) if main else _NullLog()

    start, elapsed_before = 0, 0.0
    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        for name, obj in state.items():
            if name not in ckpt.get("state", {}):
                raise input_error(ckpt_path, f"state.{name}", "missing from checkpoint (different method?)")
            try:
                obj.load_state_dict(ckpt["state"][name])
            except (RuntimeError, ValueError, KeyError) as err:  # shapes/groups of another configuration
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise input_error(ckpt_path, f"state.{name}", f"does not match this run's configuration ({first_line}); use a new --out") from None
        if load_extra_state is not None and "extra" in ckpt:
            load_extra_state(ckpt["extra"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        if "cuda_rng" in ckpt and torch.cuda.is_available() and len(ckpt["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        start, elapsed_before = int(ckpt["step"]), float(ckpt.get("elapsed_s", 0.0))

    def checkpoint(step: int, elapsed: float) -> None:
        if not main:
            return
        payload: dict[str, Any] = {
            "step": step,
            "elapsed_s": elapsed,
            "state": {name: obj.state_dict() for name, obj in state.items()},
            "config": dict(config or {}),
            "rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():  # the training samples are drawn on the GPU there
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        if extra_state is not None:
            payload["extra"] = dict(extra_state())
        save_checkpoint(ckpt_path, payload)

    t0 = time.perf_counter()
    deadline = t0 + max_minutes * 60.0 if max_minutes is not None else float("inf")
    last: dict[str, float] = {}
    stopped_by, step = "steps", start

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t0

    with _StopFlag() as stop, progress_bar(disable=quiet or not main) as bar:
        task = bar.add_task(desc, total=steps, completed=start, info="")
        while step < steps:
            # one decision for all ranks: a rank that stopped alone would leave the others waiting
            out_of_time, interrupted = distributed.any_rank(time.perf_counter() >= deadline, stop.raised)
            if out_of_time:
                stopped_by = "time"
                break
            if interrupted:
                stopped_by = "interrupt"
                break
            if progress is not None:
                progress.steps, progress.elapsed_s = steps, elapsed()
                progress.max_seconds = max_minutes * 60.0 if max_minutes is not None else None
            metrics = step_fn(step)
            step += 1
            if step % log_every == 0 or step == steps or step == start + 1:
                last = distributed.mean_over_ranks(metrics)
                log.write({"step": step, "time_s": round(elapsed(), 4), **last})
                bar.update(task, info=" ".join(f"{k}={v:.4g}" for k, v in list(last.items())[:3]))
            if eval_fn is not None and eval_every and step % eval_every == 0 and step < steps:
                log.write({"step": step, "time_s": round(elapsed(), 4), "eval": True, **eval_fn(step)})
            if step % checkpoint_every == 0:
                checkpoint(step, elapsed())
            bar.update(task, completed=step)
    total = elapsed()
    if eval_fn is not None and step > start:
        log.write({"step": step, "time_s": round(total, 4), "eval": True, **eval_fn(step)})
    if step > start or not ckpt_path.is_file():
        checkpoint(step, total)
    distributed.barrier()  # the final checkpoint exists before any rank goes on to read it
    return FitResult(step=step, stopped_by=stopped_by, elapsed_s=total, last=last, resumed_from=start)
