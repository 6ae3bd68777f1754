"""Demo section: Instance-NeRF on the built-in scene — inconsistent 2D masks in, consistent instance maps out.

Reuses the NeRF demo's data and run when that section ran before (else synthesizes 24 views at
64x64 and trains ``ngp`` for 1.5 minutes); simulates a noisy segmenter, fits the instance field for
1.5 minutes on CPU (600 steps on CUDA) and shows the input masks beside the rendered instance maps,
the NeRF-RCNN boxes, and the scores on the held-out views against the segmenter's own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from physinv.errors import PhysinvError


def demo_section(report, work_dir: str | Path, device: torch.device, seed: int = 0) -> dict:
    from physinv.instance.export import palette
    from physinv.instance.pipeline import InstanceConfig, evaluate_instance, fit_instance, load_instance_run, masks_metrics
    from physinv.io.dataset import load_views
    from physinv.synth.noisy_masks import write_noisy_masks

    work_dir = Path(work_dir)
    cuda = device.type == "cuda"
    nerf_demo = work_dir.parent / "nerf"
    if (nerf_demo / "run_ngp" / "checkpoint.pt").is_file() and (nerf_demo / "scene" / "transforms_test.json").is_file():
        data, nerf_run = nerf_demo / "scene", nerf_demo / "run_ngp"
    else:
        from physinv.nerf.config import NerfConfig
        from physinv.nerf.train import train
        from physinv.synth.scene import synthesize

        data, nerf_run = work_dir / "scene", work_dir / "run_ngp"
        if not (data / "transforms_test.json").is_file():
            synthesize(data, views=24, test_views=4, res=64, spp=32, seed=seed, progress=False)
        shutil.rmtree(nerf_run, ignore_errors=True)
        train(data, nerf_run, NerfConfig(method="ngp", seed=seed, steps=3000 if cuda else 100_000), device=device,
              max_minutes=None if cuda else 1.5, quiet=True)
    masks = work_dir / "masks"
    noisy = write_noisy_masks(data, "train", masks, seed=seed)
    test_masks = work_dir / "masks_test"
    write_noisy_masks(data, "test", test_masks, seed=seed + 1)
    segmenter = masks_metrics(test_masks, data, "test")
    run_dir = work_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    # detections kept at the paper's score threshold 0.5 (InstanceConfig's default)
    cfg = InstanceConfig(steps=600 if cuda else 100_000, seed=seed)
    try:
        fit = fit_instance(nerf_run, data, masks, run_dir, cfg, device=device, max_minutes=None if cuda else 1.5, quiet=True)
    except PhysinvError as err:  # nothing detected: say so on the page instead of failing the whole demo
        report.section("Instance-NeRF: 3D instances from view-inconsistent 2D masks", f"Not shown: {err}")
        return {"instances": 0, "error": str(err), "segmenter_pq": round(segmenter["pq"], 3)}
    scores = evaluate_instance(run_dir, data, "test", device)
    run = load_instance_run(run_dir, device)

    sec = report.section(
        "Instance-NeRF: 3D instances from view-inconsistent 2D masks",
        "A simulated segmenter labels every training view on its own (ids permuted per view, boundaries eroded "
        "or dilated, merges, splits, misses, false blobs). NeRF-RCNN finds 3D boxes and masks in the NeRF's "
        "radiance/density grid; each 2D mask takes the 3D instance it overlaps best once projected with the "
        "NeRF's depth; an instance field trained along the frozen NeRF's samples renders consistent ids from "
        "any view. Rows: input masks (training views), rendered instance maps (same views).",
    )
    views = load_views(data, "train", device=device)
    from physinv.instance.masks import load_masks
    from physinv.io.transforms import read_transforms

    m, _ = load_masks(masks, [f.image_path for f in read_transforms(views.source).frames], views.width, views.height)
    shown = list(range(min(4, len(views))))
    sec.images([(palette(m[i].numpy() % 19 + (m[i].numpy() > 0)), f"segmenter, view {i}") for i in shown], scale=3)
    sec.images([(palette(run.render(views.c2w[i], views.intrinsics[i], views.width, views.height)["labels"].cpu().numpy()), f"Instance-NeRF, view {i}")
                for i in shown], scale=3)
    boxes = [{"instance": k + 1, "class": int(c), "score": round(float(s), 3), "box (world)": [round(float(v), 2) for v in b]}
             for k, (b, s, c) in enumerate(zip(run.meta["boxes"], run.meta["scores"], run.meta["classes"]))]
    sec.table(boxes, caption="NeRF-RCNN detections (axis-aligned boxes, scene units)")
    summary = {
        "pq": round(scores["pq"], 3), "pq_scene": round(scores["pq_scene"], 3), "miou": round(scores["miou"], 3),
        "segmenter_pq": round(segmenter["pq"], 3), "segmenter_pq_scene": round(segmenter["pq_scene"], 3),
        "train_masks_pq": round(noisy["pq"], 3), "instances": fit["instances"], "steps": fit["steps"],
    }
    sec.table([summary], caption="held-out test views: Instance-NeRF vs the simulated segmenter")
    return summary
