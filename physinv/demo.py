"""``physinv demo``: each pipeline contributes a section to one HTML report.

A section is a module with ``demo_section(report, work_dir, device, seed) -> dict`` of metrics.
The whole demo must stay within 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from physinv.core.train import select_device, stderr_console
from physinv.errors import PhysinvError
from physinv.io.report import Report
from physinv.io.runs import emit_metrics

# name -> module with demo_section(); order is the order on the page
SECTIONS = {
    "synth": "physinv.synth.demo",
    "radiative": "physinv.radiative.demo",
    "nerf": "physinv.nerf.demo",
    "relight": "physinv.relight.demo",
    "sft": "physinv.sft.demo",
    "instance": "physinv.instance.demo",
}


def run_demo(out: str | Path, device: str = "auto", seed: int = 0, only: list[str] | None = None) -> dict:
    """Run the demo sections (all, or those named in ``only``) into ``<out>/index.html``; emit and
    return the metrics ``{section: {..., "seconds": s}}``. Sections whose package is absent are skipped."""
    out = Path(out)
    unknown = sorted(set(only or []) - set(SECTIONS))
    if unknown:
        raise PhysinvError(f"--only: unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    dev = select_device(device)
    report = Report(out, "physinv demo")
    metrics: dict[str, object] = {}
    for name, module_name in SECTIONS.items():
        if only and name not in only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        t0 = time.perf_counter()
        stderr_console.print(f"[bold]demo:[/bold] {name}")
        section_metrics = module.demo_section(report, out / name, device=dev, seed=seed)
        metrics[name] = {**section_metrics, "seconds": round(time.perf_counter() - t0, 1)}
        report.write()  # keep what is done so far viewable
    page = report.write()
    stderr_console.print(f"demo report: {page}")
    return emit_metrics(metrics, out)
