"""An imperfect 2D instance segmenter, simulated from ground-truth instance maps.

Instance-NeRF is fed the masks of an off-the-shelf panoptic segmenter (Mask2Former), which are
wrong in ways that are independent from view to view: the same object carries another id in every
view, boundaries bleed or shrink, neighbours are merged, one object is cut in two, objects are
missed, blobs appear where nothing is, and classes are confused. :func:`corrupt_view` reproduces
each of these on one ground-truth map (each with its own knob in :class:`MaskNoise`), and
:func:`write_noisy_masks` writes a masks folder in the format ``physinv instance fit --masks``
reads: one 16-bit PNG per view named after the view's image (``r_000.png`` for ``train/r_000``),
arbitrary ids per view (0 = unlabelled), and optionally ``classes.json``
(``{"r_000.png": {"17": "sphere", ...}, ...}``).

Order of the operations on one view: misses, boundary erosion/dilation (one random radius per
instance, applied in random order so dilated masks bleed over their neighbours), merges of touching
pairs, splits along a random line through the centroid, false blobs (random ellipses), class
confusion, then a random relabelling of the surviving segments to ids drawn from 1..65535.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from physinv.errors import PhysinvError

MAX_ID = 65535  # uint16 PNG


@dataclass
class MaskNoise:
    """Noise knobs of the simulated segmenter (probabilities per instance unless stated).

    boundary_px: radius r of the boundary noise: each instance is eroded or dilated by a random
    integer radius in [-r, r] pixels; p_merge: a touching pair of instances becomes one segment;
    p_split: an instance is cut in two along a random line through its centroid; p_miss: an
    instance is left unlabelled; false_blobs: mean number (Poisson) of spurious blobs per view;
    p_class: the class of a segment is replaced by another class (with ``classes``).
    """

    boundary_px: int = 1
    p_merge: float = 0.1
    p_split: float = 0.1
    p_miss: float = 0.1
    false_blobs: float = 0.3
    p_class: float = 0.1

    def check(self) -> "MaskNoise":
        for name in ("p_merge", "p_split", "p_miss", "p_class"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise PhysinvError(f"--{name.replace('_', '-')}: expected a probability in [0, 1], got {v}")
        if self.boundary_px < 0 or int(self.boundary_px) != self.boundary_px:
            raise PhysinvError(f"--boundary-px: expected an integer >= 0, got {self.boundary_px}")
        if not (self.false_blobs >= 0 and math.isfinite(self.false_blobs)):
            raise PhysinvError(f"--false-blobs: expected a number >= 0, got {self.false_blobs}")
        return self

    @classmethod
    def none(cls) -> "MaskNoise":
        """No corruption but the per-view relabelling (a perfect but view-inconsistent segmenter)."""
        return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius + 0.5


def _touching(labels: np.ndarray, a: int, b: int) -> bool:
    return bool(np.any(ndimage.binary_dilation(labels == a, structure=np.ones((3, 3), bool)) & (labels == b)))


def corrupt_view(
    labels: np.ndarray, noise: MaskNoise, rng: np.random.Generator, classes: dict[int, str] | None = None, class_names: list[str] | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """One view's ground-truth ids (H, W) int (0 = background) -> noisy ids (H, W) int64 and
    {noisy id: class name} (empty without ``classes``, the ground-truth id -> class map).

    class_names: the classes confusion may pick from (default: the values of ``classes``).
    """
    h, w = labels.shape
    out = labels.astype(np.int64).copy()
    ids = [int(i) for i in np.unique(out) if i > 0]
    seg_class: dict[int, str] = {i: classes[i] for i in ids} if classes else {}

    # misses: the segmenter returns nothing there (unlabelled)
    for i in ids:
        if rng.random() < noise.p_miss:
            out[out == i] = 0
    ids = [int(i) for i in np.unique(out) if i > 0]

    # boundary erosion / dilation, in random order: a dilated mask bleeds over whatever is next to it
    if noise.boundary_px > 0:
        for i in rng.permutation(ids):
            r = int(rng.integers(-noise.boundary_px, noise.boundary_px + 1))
            mask = out == i
            if r > 0:
                out[ndimage.binary_dilation(mask, structure=_disk(r))] = i
            elif r < 0:
                eroded = ndimage.binary_erosion(mask, structure=_disk(-r))
                out[mask & ~eroded] = 0
    ids = [int(i) for i in np.unique(out) if i > 0]

    # merges of touching pairs
    for a_pos, a in enumerate(ids):
        for b in ids[a_pos + 1:]:
            if (out == a).any() and (out == b).any() and _touching(out, a, b) and rng.random() < noise.p_merge:
                out[out == b] = a
    ids = [int(i) for i in np.unique(out) if i > 0]

    # splits along a random line through the centroid; the new part gets a fresh id
    next_id = max(ids + [int(labels.max())]) + 1
    for i in ids:
        if rng.random() < noise.p_split:
            vv, uu = np.nonzero(out == i)
            if len(vv) < 4:
                continue
            angle = rng.uniform(0.0, math.pi)
            side = (uu - uu.mean()) * math.cos(angle) + (vv - vv.mean()) * math.sin(angle) > 0
            out[vv[side], uu[side]] = next_id
            if classes:
                seg_class[next_id] = seg_class[i]
            next_id += 1

    # false blobs: ellipses of 3-12 % of the image size anywhere, on top of everything
    names = class_names or (sorted(set(classes.values())) if classes else [])
    for _ in range(int(rng.poisson(noise.false_blobs))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = (rng.uniform(0.03, 0.12, 2) * np.array([h, w])).clip(1.0)
        yy, xx = np.mgrid[0:h, 0:w]
        out[((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0] = next_id
        if names:
            seg_class[next_id] = str(rng.choice(names))
        next_id += 1

    # class confusion
    present = [int(i) for i in np.unique(out) if i > 0]
    if names and len(names) > 1:
        for i in present:
            if rng.random() < noise.p_class:
                seg_class[i] = str(rng.choice([n for n in names if n != seg_class[i]]))

    # the segmenter's ids mean nothing across views: relabel to random distinct ids
    new_ids = rng.choice(np.arange(1, MAX_ID + 1), size=len(present), replace=False)
    lut = np.zeros(int(out.max()) + 1, np.int64)
    lut[present] = new_ids
    noisy = lut[out]
    return noisy, {int(n): seg_class[i] for i, n in zip(present, new_ids) if i in seg_class}


def mask_name(image_path: str | Path) -> str:
    """The mask file of a view: its image's stem + ``.png`` (``train/r_000.png`` -> ``r_000.png``)."""
    return Path(image_path).stem + ".png"


def write_noisy_masks(
    data_dir: str | Path, split: str, out_dir: str | Path, noise: MaskNoise | None = None, seed: int = 0, with_classes: bool = False
) -> dict:
    """Corrupt every view's ground-truth instance map of ``<data_dir>`` ``split`` and write the masks
    folder ``out_dir`` (see the module docstring). Classes are the objects' ``shape`` from the data
    set's ``objects`` list. Returns a summary with the noisy masks' own ``pq`` (per view, averaged),
    ``pq_scene``, ``miou`` and ``miou_scene`` against the ground truth (``core.metrics.instance_scores``).
    """
    import torch

    from physinv.core.metrics import instance_scores
    from physinv.io.dataset import load_views
    from physinv.io.images import write_image

    noise = (noise or MaskNoise()).check()
    views = load_views(data_dir, split, maps=("instance",))
    gt = views.maps["instance"].numpy()
    objects = json.loads(views.source.read_text()).get("objects", [])
    classes = {int(o["id"]): str(o.get("shape", "thing")) for o in objects} if with_classes else None
    if with_classes and not objects:
        raise PhysinvError(f"{views.source}: objects: missing (needed for --classes)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    from physinv.io.transforms import read_transforms

    frames = read_transforms(views.source).frames
    written = {}
    noisy_all = []
    for i, frame in enumerate(frames):
        noisy, seg_class = corrupt_view(gt[i], noise, rng, classes)
        noisy_all.append(noisy)
        name = mask_name(frame.image_path)
        write_image(out / name, noisy.astype(np.uint16))
        written[name] = {str(k): v for k, v in seg_class.items()}
    if with_classes:
        (out / "classes.json").write_text(json.dumps(written, indent=1) + "\n")
    else:
        (out / "classes.json").unlink(missing_ok=True)
    scores = instance_scores(torch.as_tensor(np.stack(noisy_all)), torch.as_tensor(gt))
    (out / "noise.json").write_text(json.dumps({"data": str(data_dir), "split": split, "seed": seed, **asdict(noise)}, indent=1) + "\n")
    return {
        "views": len(frames),
        **scores,
        "out": str(out),
    }
