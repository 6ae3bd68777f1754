import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from physinv.core.train import fit, load_checkpoint, save_checkpoint, select_device
from physinv.errors import PhysinvError

# A tiny regression y = 3x fitted by fit(); the same script is used in-process and in a child process.
TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    from physinv.core.train import fit
    run_dir, steps, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.linspace(-1, 1, 16)[:, None]
    def step(i):
        time.sleep(delay)
        loss = ((model(x) - 3 * x) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        return {"loss": loss.detach(), "w": model.weight.detach()[0, 0]}
    res = fit(step, run_dir=run_dir, steps=steps, state={"model": model, "opt": opt},
              checkpoint_every=5, log_every=1, quiet=True)
    print(res.step, res.resumed_from, model.weight.item())
    """
)


def run_child(run_dir: Path, steps: int, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(run_dir), str(steps), str(delay)], stdout=subprocess.PIPE, text=True)


def test_kill_loses_at_most_one_interval_and_resume_continues(tmp_path):
    uninterrupted = run_child(tmp_path / "ref", steps=40, delay=0.0).communicate(timeout=120)[0].split()
    child = run_child(tmp_path, steps=1000, delay=0.05)
    log = tmp_path / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= 13:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_at = max(json.loads(line)["step"] for line in log.read_text().splitlines())
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["step"]
    assert killed_at - 5 <= saved <= killed_at and saved % 5 == 0

    out = run_child(tmp_path, steps=40, delay=0.0).communicate(timeout=120)[0].split()
    final_step, resumed_from, weight = int(out[0]), int(out[1]), float(out[2])
    assert resumed_from == saved and final_step == 40
    # the optimisation went on from the saved state: same weight as a run that was never killed
    assert weight == pytest.approx(float(uninterrupted[2]), rel=1e-6)
    steps_logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps_logged[-1] == 40 and saved + 1 in steps_logged[steps_logged.index(killed_at) :]


def test_sigterm_stops_cleanly_with_checkpoint(tmp_path):
    child = run_child(tmp_path, steps=10_000, delay=0.02)
    log = tmp_path / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 8):
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    out = child.communicate(timeout=60)[0].split()
    assert child.returncode == 0
    stopped_at = int(out[0])
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == stopped_at  # nothing lost


def test_time_budget_stops_early_and_keeps_result(tmp_path):
    w = torch.nn.Parameter(torch.zeros(()))
    holder = torch.nn.Module()
    holder.w = w

    def step(i):
        time.sleep(0.01)
        return {"w": w.detach()}

    res = fit(step, run_dir=tmp_path, steps=10**6, state={"m": holder}, max_minutes=0.5 / 60, quiet=True)
    # 0.5 s of 10 ms steps: at most 50 steps, at least one
    assert res.stopped_by == "time" and 1 <= res.step <= 50, res.step
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == res.step


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_rejects_pickled_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(PhysinvError, match="evil.pt: not a readable physinv checkpoint"):
        load_checkpoint(path)
    save_checkpoint(tmp_path / "ok.pt", {"x": torch.ones(2), "step": 3})
    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_device_choice():
    assert select_device("cpu").type == "cpu"
    with pytest.raises(PhysinvError, match="--device: unknown device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        assert select_device("auto").type == "cpu"
        with pytest.raises(PhysinvError, match="no CUDA device"):
            select_device("cuda")


def test_resume_with_another_architecture_is_one_clear_line(tmp_path):
    small = torch.nn.Linear(2, 2)
    fit(lambda i: {}, run_dir=tmp_path, steps=1, state={"model": small}, quiet=True)
    with pytest.raises(PhysinvError, match=r"checkpoint.pt: state.model: does not match this run's configuration \(.*\); use a new --out"):
        fit(lambda i: {}, run_dir=tmp_path, steps=2, state={"model": torch.nn.Linear(3, 2)}, quiet=True)
