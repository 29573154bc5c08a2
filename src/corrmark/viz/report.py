"""A small self-contained HTML report: sections of text, tables and pictures (paths relative to the report)."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; } figure img { max-width: 560px; display: block; }
figcaption { font-size: 0.85em; color: #555; max-width: 560px; } .note { color: #555; font-size: 0.9em; }
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

    def table(self, header: list[str], rows: list[list], caption: str | None = None) -> None:
        head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(cell))}</td>" for cell in row) + "</tr>" for row in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.blocks.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figures(self, items: list[tuple[str, str]]) -> None:
        """items: (image path relative to the report, caption)."""
        figures = "".join(
            f'<figure><img src="{html.escape(path)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
            f"</figcaption></figure>" for path, caption in items
        )
        self.blocks.append(f"<div>{figures}</div>")

    def render(self) -> str:
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.blocks)}</body></html>\n")

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
        temporary.write_text(self.render())
        os.replace(temporary, path)
        return path


def _format(cell) -> str:
    if isinstance(cell, float):
        return f"{cell:.3f}"
    return str(cell)
