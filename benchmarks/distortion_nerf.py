"""``ngp`` on synthetically distorted photos: lens distortion modelled (rays distorted by the
loader, :mod:`physinv.core.camera`) vs ignored (the same photos read as pinhole images).

The built-in Mitsuba scene is rendered with pinhole cameras; each training view is warped into
the image a lens with ``(k1, k2)`` would take (barrel distortion by default: the pinhole render
sampled at the undistorted position of every distorted pixel; outside the render is the white
background the scene has anyway). Both runs are scored on the *pinhole* test renders, i.e. on
the true geometry.

    python benchmarks/distortion_nerf.py --steps 1500 --res 64

Prints one JSON line (and writes ``<work>/distortion.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def distort_image(image: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray, background: float = 1.0) -> np.ndarray:
    """The image (H, W, C) of a pinhole camera -> what the distorted camera with the same
    intrinsics sees (bilinear; pixels that see outside the pinhole image get ``background``)."""
    import cv2
    import torch

    from physinv.core.camera import pixel_centres, undistort_points

    h, w = image.shape[:2]
    fx, fy, cx, cy = intrinsics
    pix = pixel_centres(w, h, dtype=torch.float64)
    xy_d = torch.stack([(pix[:, 0] - cx) / fx, (pix[:, 1] - cy) / fy], -1)
    xy = undistort_points(xy_d, torch.as_tensor(distortion, dtype=torch.float64)).numpy()
    map_x = (fx * xy[:, 0] + cx - 0.5).reshape(h, w).astype(np.float32)  # OpenCV: centres at integers
    map_y = (fy * xy[:, 1] + cy - 0.5).reshape(h, w).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(background,) * 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("bench_distortion"))
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--test-views", type=int, default=6)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--k1", type=float, default=-0.3)
    ap.add_argument("--k2", type=float, default=0.08)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from physinv.io.images import composite, read_image, write_image
    from physinv.io.transforms import Frame, Transforms, read_transforms, write_transforms
    from physinv.nerf.api import evaluate, load_run
    from physinv.nerf.config import NerfConfig
    from physinv.nerf.train import train
    from physinv.synth.scene import synthesize

    work = args.work
    truth = synthesize(work / "truth", views=args.views, test_views=args.test_views, res=args.res, spp=16, seed=0, progress=False)
    train_t = read_transforms(truth / "transforms_train.json")
    test_t = read_transforms(truth / "transforms_test.json")
    dist = np.array([args.k1, args.k2, 0.0, 0.0, 0.0, 0.0])
    extras = {"background": [1.0, 1.0, 1.0], "aabb": train_t.extras["aabb"]}
    shifts = []
    for label, modelled in (("modelled", True), ("ignored", False)):
        folder = work / label
        frames = []
        for f in train_t.frames:
            rgb = composite(read_image(f.image_path), np.ones(3, np.float32))
            path = folder / "images" / f"{f.image_path.stem}.png"
            if label == "modelled" or not (work / "modelled" / "images" / path.name).is_file():
                warped = distort_image(rgb, f.intrinsics, dist)
                write_image(path, warped)
                if label == "modelled":
                    shifts.append(float(np.abs(warped - rgb).mean()))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes((work / "modelled" / "images" / path.name).read_bytes())
            frames.append(Frame(path, f.c2w, f.intrinsics, f.width, f.height, {}, dist if modelled else None))
        write_transforms(folder / "transforms_train.json", Transforms(folder / "transforms_train.json", frames, dict(extras)), dialect="nerfstudio")
        test_frames = [Frame(f.image_path, f.c2w, f.intrinsics, f.width, f.height) for f in test_t.frames]  # pinhole truth
        write_transforms(folder / "transforms_test.json", Transforms(folder / "transforms_test.json", test_frames, dict(extras)), dialect="nerfstudio")
    result: dict = {"res": args.res, "views": args.views, "steps": args.steps, "k1": args.k1, "k2": args.k2, "mean_abs_image_change": float(np.mean(shifts))}
    for label in ("modelled", "ignored"):
        run = work / f"run_{label}"
        t0 = time.perf_counter()
        train(work / label, run, NerfConfig(method="ngp", steps=args.steps, seed=0), device="cpu", quiet=True)
        ev = evaluate(load_run(run), work / label, "test")
        result[label] = {"test_psnr": ev["psnr"], "test_ssim": ev["ssim"], "train_s": round(time.perf_counter() - t0, 1)}
    result["psnr_gain_db"] = result["modelled"]["test_psnr"] - result["ignored"]["test_psnr"]
    result["load_avg_1min"] = os.getloadavg()[0]
    (work / "distortion.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
