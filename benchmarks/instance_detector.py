"""NeRF-RCNN detectors compared: held-out generated scenes, and the grid of a NeRF trained on renders.

1. Held-out generated scenes (the last ``--held-out`` of a ``make-scenes`` folder, as
   ``train-detector`` holds them out): AP@0.25, AP@0.5, mask IoU, detections kept at the paper's
   score 0.5 per scene, and why they pass or not (``object_score_median``: per ground-truth object,
   the best score of a detection at IoU >= 0.5; ``class_accuracy``).
2. ``--nerf``: the built-in scene rendered by Mitsuba (``--views`` views at ``--res`` px), a small
   ``ngp`` trained for ``--nerf-steps`` steps, its radiance/alpha grid sampled as ``instance fit``
   does, each detector run on it: every detection with score >= 0.05 (score, class, IoU with the
   best-matching true box, from the scene description) and the count kept at 0.5.

3. ``--nerf-runs DIR ...``: scene folders of ``benchmarks/instance_quality.py`` (``DIR/data`` rendered
   by Mitsuba from a random layout, ``DIR/nerf`` an ngp trained on it): AP@0.25, AP@0.5 and mask IoU
   as in part 1, on the NeRF-made grids, against the layout's true voxel labels and boxes.

Prints one JSON line per detector and part. Example (the RESULTS.md numbers):
``python benchmarks/instance_detector.py --scenes /tmp/rcnn/scenes32 --held-out 30 --nerf
--detector data/instance/detector.pt --detector /tmp/rcnn/det32``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch


def true_boxes_world(spec) -> tuple[torch.Tensor, list[str]]:
    """Axis-aligned boxes (K, 6) in world units of a scene description's sphere / cube / cylinder
    objects (rotations about z only, as the built-in scene), and their shape names."""
    boxes, names = [], []
    for o in spec.objects:
        c, s = torch.tensor(o.position, dtype=torch.float64), torch.tensor(o.scale, dtype=torch.float64)
        yaw = math.radians(o.rotation_deg[2]) if o.rotation_deg else 0.0
        if o.shape == "cube":  # the unit cube [-1, 1]^3 scaled, then turned about z
            half = torch.stack([s[0] * abs(math.cos(yaw)) + s[1] * abs(math.sin(yaw)),
                                s[0] * abs(math.sin(yaw)) + s[1] * abs(math.cos(yaw)), s[2]])
        else:  # sphere and z-axis cylinder: symmetric about z
            half = s
        boxes.append(torch.cat([c - half, c + half]))
        names.append(o.shape)
    return torch.stack(boxes).float(), names


def nerf_grid(out: Path, views: int, res: int, steps: int, seed: int, longest: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Grid (4, X, Y, Z) of a small ngp of the built-in scene, its aabb (2, 3) and the NeRF's test PSNR."""
    from physinv.instance.nerf_grid import detector_grid_shape, sample_grid
    from physinv.instance.pipeline import load_nerf
    from physinv.nerf.config import NerfConfig
    from physinv.nerf.train import train
    from physinv.synth.scene import synthesize

    data, run_dir = out / "scene", out / "ngp"
    if not (data / "transforms_test.json").is_file():
        synthesize(data, views=views, test_views=4, res=res, spp=32, seed=seed, progress=False)
    result = train(data, run_dir, NerfConfig(method="ngp", steps=steps, seed=seed), quiet=True)  # resumes / returns when done
    run = load_nerf(run_dir, "cpu")
    grid = sample_grid(run.density, run.radiance, run.aabb, detector_grid_shape(run.aabb, longest))
    psnr = result.eval_psnr
    return grid, run.aabb, {"nerf_test_psnr": None if psnr is None else round(float(psnr), 2), "nerf_steps": steps}


def nerf_made_scene(folder: Path, longest: int) -> dict:
    """A part-1 style scene (grid, labels, boxes in voxels, classes) from an ``instance_quality`` scene
    folder: the NeRF's sampled grid, and the layout's primitives (``data/scene.json``) voxelised on it."""
    import numpy as np

    from physinv.instance.grid import voxel_centres
    from physinv.instance.nerf_grid import detector_grid_shape, sample_grid
    from physinv.instance.pipeline import load_nerf
    from physinv.instance.scenes import CLASS_NAMES, primitive_sdf

    run = load_nerf(folder / "nerf", "cpu")
    shape = detector_grid_shape(run.aabb, longest)
    grid = sample_grid(run.density, run.radiance, run.aabb, shape)
    pts = voxel_centres(run.aabb, shape).reshape(*shape, 3).double().numpy()
    labels, boxes, classes = np.zeros(shape, np.uint8), [], []
    kinds = {"sphere": "sphere", "cube": "box", "cylinder": "cylinder"}
    for k, o in enumerate(json.loads((folder / "data" / "scene.json").read_text())["objects"], start=1):
        inside = primitive_sdf(kinds[o["shape"]], pts, np.array(o["position"]), math.radians(o["rotation_deg"][2]), np.array(o["scale"])) <= 0
        if not inside.any():
            continue
        labels[inside] = k
        idx = np.argwhere(inside)
        boxes.append(np.concatenate([idx.min(0), idx.max(0) + 1]).astype(np.float32))
        classes.append(CLASS_NAMES.index(kinds[o["shape"]]))
    return {"grid": grid.cpu().numpy(), "labels": labels, "boxes": np.array(boxes, np.float32).reshape(-1, 6), "classes": np.array(classes, np.int64)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", default=None, help="make-scenes folder (part 1)")
    ap.add_argument("--held-out", type=int, default=30)
    ap.add_argument("--detector", action="append", default=None, help="detector file or run (repeatable; default: the shipped one)")
    ap.add_argument("--nerf", action="store_true", help="part 2: the built-in scene's NeRF grid")
    ap.add_argument("--nerf-runs", nargs="+", type=Path, default=None, help="part 3: instance_quality scene folders (DIR/data, DIR/nerf)")
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--nerf-steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/instance_detector_bench")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from physinv.instance.boxes import box_iou_3d
    from physinv.instance.detector import evaluate_detector, load_detector
    from physinv.instance.grid import voxel_to_world
    from physinv.instance.scenes import CLASS_NAMES, list_scenes, load_scene

    detectors = args.detector or [None]
    if args.scenes:
        files = list_scenes(args.scenes)[-args.held_out:]
        scenes = [load_scene(f) for f in files]
        for d in detectors:
            t0 = time.perf_counter()
            m = evaluate_detector(load_detector(d), scenes, "cpu")
            print(json.dumps({"part": "held_out", "detector": str(d or "shipped"), **{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()},
                              "seconds": round(time.perf_counter() - t0, 1)}))
    if args.nerf_runs:
        made: dict[int, list] = {}
        for d in detectors:
            model = load_detector(d)
            res = model.cfg.grid_res
            if res not in made:
                made[res] = [nerf_made_scene(f, res) for f in args.nerf_runs]
            t0 = time.perf_counter()
            m = evaluate_detector(model, made[res], "cpu")
            print(json.dumps({"part": "nerf_made", "detector": str(d or "shipped"), "objects": sum(len(s["boxes"]) for s in made[res]),
                              **{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}, "seconds": round(time.perf_counter() - t0, 1)}))
    if args.nerf:
        from physinv.synth.spec import default_scene

        truth, names = true_boxes_world(default_scene())
        grids = {}
        for d in detectors:
            model = load_detector(d)
            res = model.cfg.grid_res
            if res not in grids:
                grids[res] = nerf_grid(Path(args.out), args.views, args.res, args.nerf_steps, args.seed, res)
            grid, aabb, info = grids[res]
            det = model.detect(grid, score_threshold=0.05)
            shape = tuple(grid.shape[1:])
            world = voxel_to_world(det["boxes"].reshape(-1, 2, 3), aabb.float(), shape).reshape(-1, 6)
            iou = box_iou_3d(world, truth) if len(world) else torch.zeros(0, len(truth))
            rows = [{"score": round(float(s), 3), "class": CLASS_NAMES[int(c)], "best_iou": round(float(i.max()), 3),
                     "object": names[int(i.argmax())] if float(i.max()) > 0 else None}
                    for s, c, i in zip(det["scores"], det["classes"], iou)]
            kept = [r for r in rows if r["score"] >= 0.5]
            print(json.dumps({"part": "nerf_grid", "detector": str(d or "shipped"), **info, "grid": list(shape), "detections": rows,
                              "kept_at_0.5": len(kept), "kept_true_at_iou_0.25": sum(r["best_iou"] >= 0.25 for r in kept),
                              "objects_found_at_0.5": len({r["object"] for r in kept if r["best_iou"] >= 0.25})}))


if __name__ == "__main__":
    main()
