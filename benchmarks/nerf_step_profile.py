"""Where an ``ngp`` training step spends its time: forward, backward, Adam, occupancy-grid update.

Trains ``ngp`` for ``--warm-steps`` steps on the scene (the samples per ray settle as the grid
learns the empty space), then times ``--repeat`` steps phase by phase at the same rays and
samples for each hash-grid backend and Adam implementation (by default the state before the fused
kernel, PyTorch encoding + default Adam, and after it, fused kernel + fused Adam), in one process (so their ratio is measured on one machine in
one run). Prints one JSON object.

    python benchmarks/nerf_step_profile.py --threads 2                  # built-in scene, 64x64
    python benchmarks/nerf_step_profile.py --backends torch/fused-adam,fused/fused-adam --warm-steps 400
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from physinv.core.train import select_device
from physinv.io.dataset import load_views
from physinv.nerf.api import load_run
from physinv.nerf.config import NerfConfig
from physinv.nerf.train import build_optimizer, sample_rays, train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_steps(run_dir: Path, data: Path, backend: str, repeat: int, device: torch.device, seed: int = 0, fused_adam: bool = True) -> dict:
    """Median milliseconds per phase of ``repeat`` training steps of the run's model with the hash-grid
    ``backend``, and PyTorch's fused Adam or (``fused_adam=False``) its default implementation."""
    run = load_run(run_dir, device)
    model = run.model
    model.field.encoding.backend = backend
    model.train()
    optimizer = build_optimizer(model, run.config)
    for group in optimizer.param_groups:
        group["fused"] = fused_adam or None
    views = load_views(data, "train", device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = [sample_rays(views, run.config.batch_rays, gen) for _ in range(repeat)]
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "adam": [], "grid_update_amortised": []}
    samples = []
    for o, d, target in batches:
        torch.manual_seed(seed)  # the same jitter for every backend
        _sync(device)
        t0 = time.perf_counter()
        out = model.render_rays(o, d, run.background, perturb=True)
        loss = F.mse_loss(out["rgb"], target)
        _sync(device)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        optimizer.step()
        _sync(device)
        t3 = time.perf_counter()
        model.update(run.config.grid_update_every)  # one grid update, paid once every grid_update_every steps
        _sync(device)
        t4 = time.perf_counter()
        samples.append(len(out["samples"]) / len(o))
        for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, (t4 - t3) / run.config.grid_update_every)):
            phases[name].append(seconds * 1e3)
    ms = {name: round(statistics.median(v), 2) for name, v in phases.items()}
    ms["step"] = round(sum(ms.values()), 2)
    return {"ms": ms, "samples_per_ray": round(statistics.mean(samples), 2), "rays": run.config.batch_rays}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="data folder (default: synthesize the built-in scene)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "physinv_nerf_profile")
    ap.add_argument("--backends", default="torch/default-adam,fused/fused-adam", help="hash-grid backend / Adam (fused-adam or default-adam) pairs to time, in this order")
    ap.add_argument("--warm-steps", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    data = args.data
    if data is None:
        from physinv.synth.scene import synthesize

        data = args.work / "scene_64_100"
        if not (data / "transforms_test.json").is_file():
            synthesize(data, views=100, test_views=10, res=64, spp=64, seed=0, progress=False)
    run = args.work / "run_ngp"
    shutil.rmtree(run, ignore_errors=True)
    train(data, run, NerfConfig(method="ngp", steps=args.warm_steps, eval_every=10**7, checkpoint_every=10**7), device=device, quiet=True)
    result = {"device": str(device), "torch_threads": torch.get_num_threads(), "warm_steps": args.warm_steps, "backends": {}}
    for variant in args.backends.split(","):
        backend, _, adam = variant.partition("/")
        result["backends"][variant] = profile_steps(run, data, backend, args.repeat, device, fused_adam=adam != "default-adam")
    names = list(result["backends"])
    if len(names) == 2:
        a, b = (result["backends"][n]["ms"] for n in names)
        result[f"{names[0]}_over_{names[1]}"] = {k: round(a[k] / max(b[k], 1e-9), 2) for k in a}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
