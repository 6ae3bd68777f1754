"""Shared fixtures. ``tiny_scene``: one small Mitsuba-rendered data set per test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """Path of a synthesized scene: the built-in 3-object scene, 8 train / 2 test views, 32x32, 16 spp,
    with albedo, normal, depth and instance maps (see ``physinv.synth.scene``)."""
    from physinv.synth.scene import synthesize

    out = tmp_path_factory.mktemp("tiny_scene")
    return synthesize(out, views=8, test_views=2, res=32, spp=16, seed=0, progress=False)


@pytest.fixture
def run_cli(capsys):
    """``run_cli(argv) -> dict``: run ``physinv.cli.main(argv)``, assert it exits with code 0 and
    return the JSON object of its last stdout line (every evaluating command ends with one)."""
    from physinv.cli import main

    def run(argv) -> dict:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code in (0, None), capsys.readouterr().err
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    return run


@pytest.fixture
def cli_error(capsys):
    """``cli_error(argv) -> str``: run ``physinv.cli.main(argv)``, assert it exits with code 2 and
    writes exactly one stderr line (no traceback); return that line."""
    from physinv.cli import main

    def run(argv) -> str:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err  # one line, no traceback
        return err[0]

    return run


@pytest.fixture
def assert_adam_close():
    """``assert_adam_close(a, b, max_abs, max_fraction, atol)``: two state dicts of runs that should
    agree but for float rounding. Adam divides each gradient element by its own magnitude, so a
    rounding-sized change of a ~0 gradient becomes a fraction of a step: every float element stays
    within ``max_abs`` (a fraction of ``lr``), at most ``max_fraction`` of them lie off rtol 1e-4 /
    ``atol``, and every other entry is equal."""

    def check(a: dict, b: dict, max_abs: float, max_fraction: float, atol: float) -> None:
        import torch

        assert a.keys() == b.keys()
        off = total = 0
        for k in a:
            if not a[k].dtype.is_floating_point:
                assert torch.equal(a[k], b[k]), k
                continue
            diff = (a[k] - b[k]).abs()
            assert float(diff.max()) <= max_abs, (k, float(diff.max()))
            off += int((diff > atol + 1e-4 * b[k].abs()).sum())
            total += diff.numel()
        assert off <= max_fraction * total, (off, total)

    return check


class Ranks:
    """Processes forked from the test, each seeing the variables torchrun sets (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), so the code under test joins
    a Gloo process group exactly as under ``torchrun``. Forked, not spawned: no re-import of torch."""

    def __init__(self) -> None:
        self.procs: list = []

    def start(self, fn, world: int, *args, timeout_s: float = 30.0) -> list:
        import multiprocessing
        import socket

        import torch._dynamo  # noqa: F401 - DDP imports it when built (~3 s); forked ranks share the parent's

        with socket.socket() as s:  # a free port for the rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_rank_main, args=(fn, r, world, port, timeout_s, args)) for r in range(world)]
        for p in procs:
            p.start()
        self.procs += procs
        return procs

    def run(self, fn, world: int, *args, timeout_s: float = 30.0) -> list[int]:
        """``fn(*args)`` on ``world`` ranks; returns their exit codes (killed after 3 × timeout_s)."""
        procs = self.start(fn, world, *args, timeout_s=timeout_s)
        return self.join(procs, 3 * timeout_s)

    @staticmethod
    def join(procs, timeout_s: float) -> list:
        import time

        deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        return [p.exitcode for p in procs]

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def _rank_main(fn, rank: int, world: int, port: int, timeout_s: float, args) -> None:
    import os
    import sys
    import traceback

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PHYSINV_DIST_TIMEOUT=str(timeout_s))
    code = 0
    try:
        fn(*args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report and fail this rank
        traceback.print_exc()
        code = 1
    finally:
        try:
            from physinv.core.distributed import shutdown

            shutdown()
        except Exception:  # noqa: BLE001
            pass
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)  # no pytest teardown in a forked child


@pytest.fixture
def ranks():
    """``ranks.run(fn, world, *args)``: run ``fn`` on ``world`` forked ranks of a Gloo group (see :class:`Ranks`)."""
    r = Ranks()
    yield r
    r.close()
