"""A small self-contained HTML report: sections of text, images, image rows, tables and plots.

Images and plots are written as PNG files under ``<out>/assets/`` and referenced relatively, so
the folder can be opened or zipped as it is.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from physinv.core.train import atomic_write_bytes

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #aaa}
figure{display:inline-block;margin:.4em;text-align:center;vertical-align:top}
figure img{image-rendering:pixelated;border:1px solid #ccc;max-width:100%}
figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}
th{background:#eee}pre{background:#f6f6f6;padding:.5em;overflow-x:auto}
"""


def to_uint8_image(image: Any, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Array or tensor -> (H, W, 3|4) uint8. Floats are read as [0, 1] RGB(A); (H, W) maps go through ``cmap``."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        import matplotlib

        lo = np.nanmin(arr) if vmin is None else vmin
        hi = np.nanmax(arr) if vmax is None else vmax
        norm = (arr - lo) / (hi - lo if hi > lo else 1.0)
        arr = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(norm), 0, 1))[..., :3]
    if arr.dtype != np.uint8:
        arr = (np.clip(np.nan_to_num(arr.astype(np.float64)), 0, 1) * 255 + 0.5).astype(np.uint8)
    return arr


class Section:
    def __init__(self, report: "Report", title: str):
        self.report, self.title, self.parts = report, title, []
        self.slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"

    def text(self, text: str, pre: bool = False) -> "Section":
        body = html.escape(text)
        self.parts.append(f"<pre>{body}</pre>" if pre else f"<p>{body}</p>")
        return self

    def image(self, image: Any, caption: str = "", scale: int = 1, **colour: Any) -> "Section":
        """image: (H, W, 3|4) in [0, 1] or uint8, or (H, W) scalar map (``cmap``/``vmin``/``vmax``), or a file path."""
        self.parts.append(self._figure(image, caption, scale, **colour))
        return self

    def images(self, items: Sequence[tuple[Any, str]], scale: int = 1, **colour: Any) -> "Section":
        """A row of images: ``[(image, caption), ...]``."""
        self.parts.append("<div>" + "".join(self._figure(im, cap, scale, **colour) for im, cap in items) + "</div>")
        return self

    def table(self, rows: Sequence[Mapping[str, Any]], caption: str = "") -> "Section":
        if not rows:
            return self
        cols = list(dict.fromkeys(k for r in rows for k in r))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")
        return self

    def plot(
        self,
        x: Sequence[float] | Mapping[str, Sequence[float]],
        series: Mapping[str, Sequence[float]],
        xlabel: str = "",
        ylabel: str = "",
        caption: str = "",
        logy: bool = False,
    ) -> "Section":
        """Line plot of ``series`` against ``x`` (one shared x, or one x per series name)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
        for name, ys in series.items():
            xs = x[name] if isinstance(x, Mapping) else x
            ax.plot(list(xs), list(ys), label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = self.report.asset_path(self.slug, ".png")
        fig.savefig(path)
        plt.close(fig)
        self.parts.append(self._figure(path, caption, 1))
        return self

    def _figure(self, image: Any, caption: str, scale: int, **colour: Any) -> str:
        if isinstance(image, (str, Path)):
            path = Path(image)
        else:
            import imageio.v3 as iio

            arr = to_uint8_image(image, **colour)
            if scale > 1:
                arr = arr.repeat(scale, 0).repeat(scale, 1)
            path = self.report.asset_path(self.slug, ".png")
            iio.imwrite(path, arr)
        rel = html.escape(str(path.relative_to(self.report.out_dir)) if path.is_relative_to(self.report.out_dir) else str(path))
        return f'<figure><img src="{rel}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'

    def render(self) -> str:
        return f'<h2 id="{self.slug}">{html.escape(self.title)}</h2>\n' + "\n".join(self.parts)


class Report:
    """``Report(out_dir, title)``; add sections; ``write()`` writes ``<out_dir>/index.html``."""

    def __init__(self, out_dir: str | Path, title: str):
        self.out_dir = Path(out_dir)
        self.title = title
        self.sections: list[Section] = []
        self._count = 0
        (self.out_dir / "assets").mkdir(parents=True, exist_ok=True)

    def section(self, title: str, text: str = "") -> Section:
        sec = Section(self, title)
        if text:
            sec.text(text)
        self.sections.append(sec)
        return sec

    def asset_path(self, stem: str, suffix: str) -> Path:
        self._count += 1
        return self.out_dir / "assets" / f"{stem}-{self._count:03d}{suffix}"

    def write(self) -> Path:
        toc = "".join(f'<li><a href="#{s.slug}">{html.escape(s.title)}</a></li>' for s in self.sections)
        body = "\n".join(s.render() for s in self.sections)
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1><ul>{toc}</ul>{body}</body></html>\n"
        )
        path = self.out_dir / "index.html"
        atomic_write_bytes(path, page.encode())
        return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
