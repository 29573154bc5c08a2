"""A small self-contained HTML report: sections of text, tables and pictures (paths relative to the report)."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; } figure img { max-width: 560px; display: block; }
figcaption { font-size: 0.85em; color: #555; max-width: 560px; } .note { color: #555; font-size: 0.9em; }
.grid { display: grid; gap: 0.5em; width: min(96vw, 1800px); margin-left: calc(50% - min(48vw, 900px)); }
.grid figure { margin: 0; } .grid figure img { max-width: 100%; } .grid figcaption { max-width: none; }
.broken-images { background: #fdd; border: 1px solid #c00; padding: 0.5em; }
.legend { display: flex; flex-wrap: wrap; gap: 0.4em 1.4em; margin: 0.6em 0; font-size: 0.95em; }
.legend span.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #555; margin-right: 0.4em;
  vertical-align: -0.15em; }
svg.plot text { font: 13px system-ui, sans-serif; fill: #222; }
"""

# Marks every picture as loaded or broken once the page has loaded (data-loaded="yes"/"no" on each <img>, counts on
# <body>) and shows a warning when one is broken: a reader sees a moved or partial report at once, and the browser
# test reads the marks from the rendered DOM.
CHECK_IMAGES_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    var loaded = images[i].complete && images[i].naturalWidth > 0;
    images[i].setAttribute("data-loaded", loaded ? "yes" : "no");
    if (!loaded) { broken++; }
  }
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-broken", String(broken));
  if (broken > 0) {
    var warning = document.createElement("p");
    warning.className = "broken-images";
    warning.textContent = broken + " of " + images.length + " pictures failed to load: keep index.html beside them.";
    document.body.insertBefore(warning, document.body.firstChild);
  }
});
"""


@dataclass
class Report:
    title: str
    blocks: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, note: bool = False) -> None:
        css = ' class="note"' if note else ""
        self.blocks.append(f"<p{css}>{html.escape(text)}</p>")

    def table(self, header: list[str], rows: list[list], caption: str | None = None, table_id: str | None = None
              ) -> None:
        head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
        body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        identifier = f' id="{html.escape(table_id)}"' if table_id else ""
        self.blocks.append(f"<table{identifier}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figures(self, items: list[tuple[str, str]], columns: int | None = None) -> None:
        """items: (image path relative to the report, caption); ``columns``: a grid of that many equal columns.

        Each picture links to itself, so a reader can open it at full size.
        """
        figures = "".join(
            f'<figure><a href="{html.escape(path)}"><img src="{html.escape(path)}" alt="{html.escape(caption)}"></a>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>" for path, caption in items
        )
        layout = (f' class="grid" style="grid-template-columns: repeat({int(columns)}, minmax(0, 1fr))"'
                  if columns else "")
        self.blocks.append(f"<div{layout}>{figures}</div>")

    def legend(self, entries: list[tuple], title: str = "Legend") -> None:
        """A row of ``(colour (r, g, b) or None, text)`` entries: what the colours and marks of the pictures mean."""
        items = "".join(
            "<span>" + (f'<span class="swatch" style="background: rgb{tuple(int(v) for v in fill)}"></span>'
                        if fill is not None else "") + f"{html.escape(text)}</span>" for fill, text in entries)
        self.blocks.append(f'<div class="legend" data-legend="{html.escape(title)}"><strong>{html.escape(title)}:'
                           f"</strong>{items}</div>")

    def svg(self, markup: str) -> None:
        """An inline SVG picture (e.g. ``line_plot_svg``), drawn by the browser: no image file to lose."""
        self.blocks.append(markup)

    def render(self) -> str:
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.blocks)}"
                f"<script>{CHECK_IMAGES_SCRIPT}</script></body></html>\n")

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
        temporary.write_text(self.render())
        os.replace(temporary, path)
        return path


def _cell(cell) -> str:
    numeric = isinstance(cell, (int, float, np.number)) and not isinstance(cell, bool)
    opening = '<td class="num">' if numeric else "<td>"
    return f"{opening}{html.escape(_format(cell))}</td>"


def _format(cell) -> str:
    if isinstance(cell, (float, np.floating)):
        return f"{cell:.3f}"
    return str(cell)


def line_plot_svg(series: dict[str, tuple], x_label: str, y_label: str, colours: dict | None = None,
                  width: int = 900, height: int = 360, y_range: tuple = (0.0, 1.0)) -> str:
    """A line plot as inline SVG: ``series`` maps a name to ``(xs, ys)``; axes with ticks, labels and a legend
    (names up to ``LEGEND_CHARACTERS`` long, the rest cut with an ellipsis)."""
    left, right, top, bottom = 56, 380, 16, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    xs_all = np.concatenate([np.asarray(xs, float) for xs, _ in series.values()]) if series else np.array([0.0, 1.0])
    x_low, x_high = float(xs_all.min()), float(xs_all.max()) if xs_all.max() > xs_all.min() else float(xs_all.min()) + 1
    y_low, y_high = y_range

    def px(x):
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y):
        return top + (1 - (y - y_low) / (y_high - y_low)) * plot_h

    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(y_label)} against '
             f'{html.escape(x_label)}">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>']
    for tick in np.linspace(y_low, y_high, 6):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
    for tick in np.linspace(x_low, x_high, 6):
        parts.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{tick:.2f}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}'
                 f'</text><text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f'{html.escape(y_label)}</text>')
    default = ["#e6194b", "#3cb44b", "#0082c8", "#f58231", "#911eb4", "#008080", "#aa6e28", "#800000"]
    for number, (name, (xs, ys)) in enumerate(series.items()):
        stroke = (colours or {}).get(name, default[number % len(default)])
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
        legend_y = top + 14 + number * 20
        parts.append(f'<polyline data-series="{html.escape(name)}" points="{points}" fill="none" stroke="{stroke}" '
                     f'stroke-width="2.5"/><line x1="{left + plot_w + 12}" x2="{left + plot_w + 34}" y1="{legend_y - 4}"'
                     f' y2="{legend_y - 4}" stroke="{stroke}" stroke-width="3"/><text x="{left + plot_w + 40}" '
                     f'y="{legend_y}">{html.escape(_shortened(name))}</text>')
    parts.append("</svg>")
    return "".join(parts)


LEGEND_CHARACTERS = 44  # what fits the 380 px legend column at 13 px


def _shortened(name: str) -> str:
    return name if len(name) <= LEGEND_CHARACTERS else name[:LEGEND_CHARACTERS - 1] + "\u2026"
