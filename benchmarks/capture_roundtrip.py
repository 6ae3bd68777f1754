"""Round trip of ``physinv data from-images``: a Mitsuba-rendered scene with known poses, given as
plain PNGs, through pycolmap SfM; camera centres compared after a similarity (Umeyama) alignment,
then (``--nerf-steps`` > 0) ``ngp`` trained on the reconstructed poses vs on the true poses, both
on the same photos downscaled to ``--nerf-res`` pixels (the converter's ``max_size``), the same
white background and the same number of steps.

The scene: the built-in scene's three shapes with photographic textures (scikit-image's astronaut,
coffee and chelsea images) so SIFT finds features; the default scene's plain colours and regular
checkerboard give too few distinctive ones. Train and test views are reconstructed together (one
SfM run); the test split of the reconstructed data set is the test views.

    python benchmarks/capture_roundtrip.py --views 60 --test-views 4 --res 400                       # poses
    python benchmarks/capture_roundtrip.py --views 36 --test-views 4 --res 320 --nerf-steps 1500 --nerf-res 80  # + ngp

Prints one JSON line (and writes it to ``<work>/roundtrip.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def textured_spec(folder: Path) -> Path:
    """A TOML scene spec: sphere, cube, cylinder with image textures from scikit-image."""
    import skimage.data

    from physinv.io.images import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea"):
        write_image(folder / f"{name}.png", getattr(skimage.data, name)())
    spec = f"""
aabb = [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]
[camera]
radius = 2.6
[[objects]]
shape = "sphere"
name = "sphere"
position = [0.45, -0.35, 0.0]
scale = [0.4, 0.4, 0.4]
material = {{ type = "diffuse", texture = {{ type = "image", file = "{folder / 'astronaut.png'}" }} }}
[[objects]]
shape = "cube"
name = "cube"
position = [-0.45, -0.3, -0.1]
rotation_deg = [0.0, 0.0, 30.0]
scale = [0.3, 0.3, 0.3]
material = {{ type = "diffuse", texture = {{ type = "image", file = "{folder / 'coffee.png'}" }} }}
[[objects]]
shape = "cylinder"
name = "cylinder"
position = [0.0, 0.5, -0.05]
scale = [0.25, 0.25, 0.35]
material = {{ type = "diffuse", texture = {{ type = "image", file = "{folder / 'chelsea.png'}" }} }}
"""
    path = folder / "scene.toml"
    path.write_text(spec)
    return path


def plain_pngs(truth: Path, photos: Path) -> dict[str, tuple[str, np.ndarray]]:
    """Composite every train/test RGBA render on white into ``photos`` as RGB PNGs; name -> (split, true c2w)."""
    from physinv.io.images import composite, read_image, write_image
    from physinv.io.transforms import read_transforms

    photos.mkdir(parents=True, exist_ok=True)
    known = {}
    for split in ("train", "test"):
        for f in read_transforms(truth / f"transforms_{split}.json").frames:
            name = f"{split}_{f.image_path.stem}.png"
            write_image(photos / name, composite(read_image(f.image_path), np.ones(3, np.float32)))
            known[name] = (split, f.c2w)
    return known


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("bench_capture"))
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--test-views", type=int, default=4)
    ap.add_argument("--res", type=int, default=192)
    ap.add_argument("--spp", type=int, default=16)
    ap.add_argument("--nerf-steps", type=int, default=0, help="ngp training steps per run (0: poses only)")
    ap.add_argument("--nerf-res", type=int, default=80, help="image size of the NeRF comparison (downscaled photos)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model estimated by SfM")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from physinv.capture.normalize import similarity_align
    from physinv.capture.scene import CaptureConfig
    from physinv.capture.sfm import from_images
    from physinv.io.transforms import Transforms, read_transforms, write_transforms
    from physinv.synth.scene import synthesize_with_info

    work = args.work
    t0 = time.perf_counter()
    truth, info = synthesize_with_info(work / "truth", spec=textured_spec(work / "textures"), views=args.views, test_views=args.test_views, res=args.res, spp=args.spp, seed=0, progress=False)
    render_s = time.perf_counter() - t0
    known = plain_pngs(truth, work / "photos")
    small = args.nerf_res if args.nerf_steps > 0 else 0
    summary = from_images(work / "photos", work / "recon", CaptureConfig(max_size=small), camera_model=args.camera_model, quiet=True)
    recon = read_transforms(work / "recon" / "transforms.json")
    names = [f.image_path.name for f in recon.frames]
    est = np.stack([f.c2w[:3, 3] for f in recon.frames])
    true = np.stack([known[n][1][:3, 3] for n in names])
    matrix, aligned = similarity_align(est, true)
    err = np.linalg.norm(aligned - true, axis=-1)
    aabb = np.asarray(read_transforms(truth / "transforms_train.json").extras["aabb"])
    size = float(np.linalg.norm(aabb[1] - aabb[0]))  # the scene box's diagonal
    # rotation error of the aligned cameras (degrees)
    rot = matrix[:3, :3] / np.cbrt(np.linalg.det(matrix[:3, :3]))
    rot_err = [np.degrees(np.arccos(np.clip((np.trace((rot @ f.c2w[:3, :3]).T @ known[f.image_path.name][1][:3, :3]) - 1) / 2, -1, 1))) for f in recon.frames]
    result = {
        "views": len(known), "registered": len(names), "res": args.res, "camera_model": args.camera_model, "render_s": round(render_s, 1), "sfm_s": summary["seconds"],
        "points": summary["points"], "scene_size": size, "centre_err_max": float(err.max()), "centre_err_mean": float(err.mean()),
        "centre_err_max_pct": 100 * float(err.max()) / size, "centre_err_max_pct_of_box_side": 100 * float(err.max()) / float(np.max(aabb[1] - aabb[0])), "rotation_err_max_deg": float(np.max(rot_err)),
    }
    if args.nerf_steps > 0:
        from physinv.capture.scene import write_scene
        from physinv.io.transforms import Frame
        from physinv.nerf.api import evaluate, load_run
        from physinv.nerf.config import NerfConfig
        from physinv.nerf.train import train

        # the same plain photos with the true poses, downscaled the same way, as a data set
        true_k = read_transforms(truth / "transforms_train.json").frames[0].intrinsics
        true_frames = [Frame(work / "photos" / n, known[n][1], true_k, args.res, args.res) for n in names]
        write_scene(work / "truth_small", Transforms(work / "truth_small" / "transforms.json", true_frames, {"background": [1.0, 1.0, 1.0], "aabb": [[-1.0] * 3, [1.0] * 3]}), None, CaptureConfig(normalize=False, max_size=small))
        psnr, seconds = {}, {}
        for label, data in (("true_poses", work / "truth_small"), ("sfm_poses", work / "recon")):
            t = read_transforms(data / "transforms.json")
            extras = {k: v for k, v in t.extras.items() if k != "dialect"}
            extras["background"] = [1.0, 1.0, 1.0]  # the photos were composited on white
            for split in ("train", "test"):  # test_* photos -> transforms_test.json
                frames = [f for f in t.frames if known[f.image_path.name][0] == split]
                write_transforms(data / f"transforms_{split}.json", Transforms(data / f"transforms_{split}.json", frames, extras), dialect="nerfstudio")
            run = work / f"run_{label}"
            t0 = time.perf_counter()
            train(data, run, NerfConfig(method="ngp", steps=args.nerf_steps, seed=0), device="cpu", quiet=True)
            seconds[label] = round(time.perf_counter() - t0, 1)
            psnr[label] = evaluate(load_run(run), data, "test")["psnr"]
        result.update({"nerf_steps": args.nerf_steps, "nerf_res": small, "test_psnr": psnr, "train_seconds": seconds, "psnr_gap_db": psnr["true_poses"] - psnr["sfm_poses"]})
    result["load_avg_1min"] = os.getloadavg()[0]
    (work / "roundtrip.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
