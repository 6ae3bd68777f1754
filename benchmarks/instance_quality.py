"""Instance-NeRF quality on held-out generated scenes, with the ablations of the paper's Table 2.

For each scene: a random layout of primitives (the NeRF-RCNN scene generator's layouts, random
materials) rendered by Mitsuba (``physinv synth``), an ``ngp`` NeRF, the simulated segmenter
(``physinv synth noisy-masks``, default noise) on the training views and, for its own score, on
the test views; then ``instance fit`` variants scored on the test views (novel views):

    full          greedy matching (IoU > 0.05), smoothness, refinement  (the paper)
    no_smooth     λ_r = 0
    no_refine     no refinement stage
    hungarian     one-to-one matching instead of greedy
    direct        no detector / matching: the field on the raw inconsistent ids (the paper's DM-NeRF row)

Prints one JSON line per scene and a summary line (means); ``--out`` keeps everything.
Example: ``python benchmarks/instance_quality.py --scenes 5 --out /tmp/instbench``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from physinv.instance.pipeline import InstanceConfig

VARIANTS = {
    "full": {},
    "no_smooth": {"smoothness": 0.0},
    "no_refine": {"refine": False},
    "hungarian": {"matching": "hungarian"},
    "direct": {"direct": True},
}


def random_spec(seed: int):
    from physinv.instance.scenes import _random_layout
    from physinv.synth.spec import MaterialSpec, ObjectSpec, SceneSpec

    rng = np.random.default_rng(10_000 + seed)
    objects = []
    for i, o in enumerate(_random_layout(rng, max_objects=5)):
        shape = {"sphere": "sphere", "box": "cube", "cylinder": "cylinder"}[o["kind"]]
        kind = str(rng.choice(["diffuse", "plastic", "conductor"]))
        objects.append(ObjectSpec(shape, f"{shape}{i}", position=[float(v) for v in o["centre"]], rotation_deg=[0.0, 0.0, float(np.degrees(o["yaw"]))],
                                  scale=[float(v) for v in o["half"]], material=MaterialSpec(kind, albedo=[float(v) for v in o["colour"]], roughness=float(rng.uniform(0.2, 0.7)))))
    return SceneSpec(objects, aabb=[[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], source=f"random scene {seed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--res", type=int, default=48)
    ap.add_argument("--nerf-steps", type=int, default=2000, help="ngp steps per scene (a step budget keeps the figures independent of the machine's load)")
    ap.add_argument("--nerf-minutes", type=float, default=None, help="optional wall-clock cap of each ngp")
    ap.add_argument("--fit-steps", type=int, default=InstanceConfig.steps, help="instance-field steps per variant (the schedule: refinement at refine_at of them)")
    ap.add_argument("--fit-minutes", type=float, default=None, help="optional wall-clock cap of each fit (a capped fit may stop before its refinement stage)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--detector", default=None)
    ap.add_argument("--score-threshold", type=float, default=0.5, help="NeRF-RCNN score threshold (the paper: 0.5)")
    ap.add_argument("--out", default="/tmp/instance_bench")
    args = ap.parse_args()

    from physinv.core.train import select_device
    from physinv.instance.pipeline import evaluate_instance, fit_instance, masks_metrics
    from physinv.nerf.config import NerfConfig
    from physinv.nerf.train import train
    from physinv.synth.noisy_masks import write_noisy_masks
    from physinv.synth.scene import synthesize

    device = select_device("auto")
    out = Path(args.out)
    rows = []
    for s in range(args.first_seed, args.first_seed + args.scenes):
        t0 = time.perf_counter()
        root = out / f"scene{s:02d}"
        data = root / "data"
        if not (data / "transforms_test.json").is_file():
            synthesize(data, spec=random_spec(s), views=args.views, test_views=4, res=args.res, spp=32, seed=s, progress=False)
        nerf = root / "nerf"
        if not (nerf / "checkpoint.pt").is_file():
            # a small hash grid: the default (T = 2^19, 16 levels) is slow on a CPU
            small = dict(levels=12, log2_table_size=15, finest_resolution=128, batch_rays=1024, grid_resolution=48, render_steps=128)
            train(data, nerf, NerfConfig(method="ngp", seed=s, steps=args.nerf_steps, **small), device=device, max_minutes=args.nerf_minutes, quiet=True)
        write_noisy_masks(data, "train", root / "masks", seed=s)
        write_noisy_masks(data, "test", root / "masks_test", seed=s + 1000)
        row = {"scene": s, "segmenter": masks_metrics(root / "masks_test", data, "test")}
        for name in args.variants.split(","):
            cfg = InstanceConfig(steps=args.fit_steps, seed=s, score_threshold=args.score_threshold, **VARIANTS[name])
            run = root / f"inst_{name}"
            try:
                t_fit = time.perf_counter()
                fitted = fit_instance(nerf, data, root / "masks", run, cfg, detector=args.detector, max_minutes=args.fit_minutes, device=device, quiet=True)
                row[name] = {k: v for k, v in evaluate_instance(run, data, "test", device).items() if k in ("pq", "pq_scene", "miou", "instances")}
                row[name].update(steps=fitted["steps"], fit_seconds=round(time.perf_counter() - t_fit, 1))
            except Exception as err:  # noqa: BLE001 - a variant that fails (e.g. no detection) is reported, not fatal
                row[name] = {"error": str(err).splitlines()[0]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"scenes": len(rows), "device": str(device), "threads": torch.get_num_threads()}
    for key in ["segmenter", *args.variants.split(",")]:
        for metric in ("pq", "pq_scene", "miou"):
            vals = [r[key][metric] for r in rows if metric in r.get(key, {})]
            summary[f"{key}_{metric}"] = round(float(np.mean(vals)), 4) if vals else None
    print(json.dumps(summary), flush=True)
    (out / "summary.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
