"""``physinv`` command line: one group per pipeline and ``physinv demo``.

Bad input raises :class:`physinv.errors.PhysinvError`; :func:`main` prints it as one line on
stderr and exits with code 2 (no traceback).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from physinv.cli_common import Device, Out, Seed
from physinv.errors import PhysinvError

app = typer.Typer(
    name="physinv",
    help="Recover geometry, materials, light, labels, cloth mechanics and media densities by differentiating through physics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (group name, module holding a typer app called `app`, one-line help)
GROUPS = [
    ("synth", "physinv.synth.cli", "Ground-truth multi-view data rendered with Mitsuba 3."),
    ("nerf", "physinv.nerf.cli", "Neural radiance fields: faithful NeRF and a fast hash-grid model."),
    ("relight", "physinv.relight.cli", "NeRD / PhySG decomposition and relighting."),
    ("radiative", "physinv.radiative.cli", "Grey P1 radiative transfer: solver, data, V-Net, inversion."),
    ("sft", "physinv.sft.cli", "phi-SfT: cloth reconstruction through a differentiable simulator."),
    ("instance", "physinv.instance.cli", "Instance-NeRF: 3D instance segmentation of a trained NeRF."),
    ("data", "physinv.capture.cli", "Users' own captures: photos or a COLMAP model -> a physinv data set."),
]


def _placeholder(name: str, help_text: str) -> typer.Typer:
    group = typer.Typer(help=f"{help_text} (not implemented yet)", no_args_is_help=False)

    @group.callback(invoke_without_command=True)
    def _not_yet() -> None:
        raise PhysinvError(f"physinv {name}: this pipeline is not implemented yet")

    return group


for _name, _module, _help in GROUPS:
    try:
        _group = importlib.import_module(_module).app
    except ModuleNotFoundError as _err:
        if _err.name != _module:  # a real missing dependency inside the module: surface it
            raise
        _group = _placeholder(_name, _help)
    app.add_typer(_group, name=_name, help=_help)


@app.command()
def demo(
    out: Out = Path("demo"),
    device: Device = "auto",
    seed: Seed = 0,
    only: Annotated[str, typer.Option(help="comma-separated section names to run (default: all)")] = "",
) -> None:
    """Run every pipeline's demo on built-in data and write ``<out>/index.html``."""
    from physinv.demo import run_demo

    run_demo(out, device=device, seed=seed, only=[s for s in only.split(",") if s])


def _joined() -> bool:
    """Whether this process joined a torchrun process group (then rank 0 alone reports errors)."""
    from physinv.core.distributed import is_initialized

    return is_initialized()


@app.command()
def view(
    run: Annotated[Path, typer.Argument(help="run folder (a NeRF run: checkpoint.pt)")],
    port: Annotated[int, typer.Option("--port", help="HTTP/websocket port")] = 8080,
    host: Annotated[str, typer.Option("--host", help="interface to listen on (0.0.0.0: every one)")] = "127.0.0.1",
    preview: Annotated[int, typer.Option("--preview", help="preview image height in pixels")] = 64,
    mesh: Annotated[list[Path], typer.Option("--mesh", help="extra mesh files to show (repeatable)")] = [],  # noqa: B006
    envmap: Annotated[Optional[Path], typer.Option("--envmap", help="relight runs: also show them relit under this .exr/.hdr map")] = None,
    device: Device = "cpu",
) -> None:
    """Browser viewer (viser): training cameras, meshes, and a nerf / relight / instance run rendered from the browser's camera."""
    from physinv.core.train import select_device
    from physinv.view import serve

    serve(run, host, port, preview, select_device(device), mesh, envmap)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the typer app, turning ``PhysinvError`` into one line + exit 2.

    Usage errors (unknown flag, bad type) are typer's own: a short message and exit code 2.
    """
    try:
        app(args=argv, prog_name="physinv")
    except PhysinvError as err:
        if os.environ.get("RANK", "0") == "0" or not _joined():  # ranks that joined fail alike: one line, from rank 0
            print(f"physinv: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("physinv: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
