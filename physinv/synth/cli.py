"""``physinv synth``: ground-truth data rendered with Mitsuba 3, and a checker for multi-view data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from physinv.cli_common import Device, Out, Seed

app = typer.Typer(help="Ground-truth multi-view data rendered with Mitsuba 3.", no_args_is_help=True)


@app.command()
def scene(
    out: Out = Path("data/synth"),
    views: Annotated[int, typer.Option("--views", help="training views")] = 100,
    test_views: Annotated[int, typer.Option("--test-views", help="test views")] = 10,
    res: Annotated[int, typer.Option("--res", help="image width = height, pixels")] = 64,
    spp: Annotated[int, typer.Option("--spp", help="samples per pixel of the RGB images")] = 64,
    spec: Annotated[Optional[Path], typer.Option("--spec", help="scene spec (.toml or .json); default: a built-in scene (--scene)")] = None,
    builtin: Annotated[str, typer.Option("--scene", help="built-in scene without --spec: objects (3 objects, 3 materials) | relight (one textured plastic capsule)")] = "objects",
    test_light: Annotated[bool, typer.Option("--test-light", help="also render the test cameras under a second light (transforms_relight.json)")] = False,
    lights: Annotated[int, typer.Option("--lights", help="K procedural skies (the sun moving; weather cycling base, clear, overcast); training view i is lit by sky i mod K")] = 1,
    device: Device = "auto",
    seed: Seed = 0,
) -> None:
    """Render a multi-view data set: RGBA images, albedo/normal/depth/instance maps, env maps, meshes.

    Prints one JSON line (views, resolution, seconds, variant) and writes ``<out>/metrics.json``.
    """
    from physinv.core.train import select_device
    from physinv.errors import PhysinvError
    from physinv.io.runs import emit_metrics
    from physinv.synth.scene import synthesize_with_info
    from physinv.synth.spec import BUILTIN_SCENES

    if builtin not in BUILTIN_SCENES:
        raise PhysinvError(f"--scene: unknown built-in scene {builtin!r} (known: {', '.join(BUILTIN_SCENES)})")
    if spec is not None and builtin != "objects":
        raise PhysinvError("--scene and --spec: give one of them")
    dev = select_device(device)
    _, info = synthesize_with_info(
        out, spec=spec if spec is not None else BUILTIN_SCENES[builtin](), views=views, test_views=test_views, res=res, spp=spp, lights=lights,
        test_light=test_light, seed=seed, prefer_cuda=dev.type == "cuda",
    )
    emit_metrics({**info, "out": str(out)}, out)


@app.command()
def inspect(
    data: Annotated[Path, typer.Argument(help="data folder (with transforms_<split>.json or transforms.json) or a json file")],
    split: Annotated[str, typer.Option("--split", help="train | test | val | relight ...")] = "train",
) -> None:
    """Check that a multi-view data set loads (transforms, images, per-view maps) and summarise it as JSON."""
    import json

    from physinv.io.dataset import MAP_KINDS, load_views
    from physinv.io.transforms import read_transforms, split_path

    path = split_path(data, split)
    transforms = read_transforms(path)
    present = [k for k in MAP_KINDS if all(f"{k}_path" in f.extras for f in transforms.frames)]
    views = load_views(data, split, maps=present)
    summary = {
        "file": str(views.source),
        "dialect": transforms.extras.get("dialect"),
        "views": len(views),
        "resolution": [views.width, views.height],
        "alpha": views.alpha is not None,
        "maps": present,
        "lights": sorted({l for l in views.lights if l}),
        "aabb": None if views.aabb is None else views.aabb.tolist(),
    }
    print(json.dumps(summary), flush=True)


@app.command("noisy-masks")
def noisy_masks(
    data: Annotated[Path, typer.Argument(help="data folder written by `physinv synth scene` (per-frame instance_path)")],
    out: Annotated[Path, typer.Option("--out", help="masks folder to write (one PNG per view)")],
    split: Annotated[str, typer.Option("--split", help="train | test ...")] = "train",
    boundary_px: Annotated[int, typer.Option("--boundary-px", help="max erosion/dilation radius per instance, pixels")] = 1,
    p_merge: Annotated[float, typer.Option("--p-merge", help="probability that a touching pair is merged")] = 0.1,
    p_split: Annotated[float, typer.Option("--p-split", help="probability that an instance is cut in two")] = 0.1,
    p_miss: Annotated[float, typer.Option("--p-miss", help="probability that an instance is missed (unlabelled)")] = 0.1,
    false_blobs: Annotated[float, typer.Option("--false-blobs", help="mean number of false blobs per view")] = 0.3,
    p_class: Annotated[float, typer.Option("--p-class", help="probability of class confusion (with --classes)")] = 0.1,
    classes: Annotated[bool, typer.Option("--classes/--no-classes", help="also write classes.json (object shapes as classes)")] = False,
    seed: Seed = 0,
) -> None:
    """Simulate an imperfect 2D instance segmenter from the ground-truth instance maps.

    Writes one PNG per view named after the view's image, with arbitrary ids per view (0 =
    unlabelled); prints one JSON line with the noisy masks' own pq, pq_scene and miou.
    """
    from physinv.io.runs import emit_metrics
    from physinv.synth.noisy_masks import MaskNoise, write_noisy_masks

    noise = MaskNoise(boundary_px, p_merge, p_split, p_miss, false_blobs, p_class)
    emit_metrics(write_noisy_masks(data, split, out, noise, seed=seed, with_classes=classes), out)
