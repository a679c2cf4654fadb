"""The leaderboard as one self-contained HTML file: the table (click a heading to sort) and the plots inline."""

from __future__ import annotations

import base64
import html
from pathlib import Path

# Sorts the table by the clicked column: numbers as numbers ("-" last), text as text; a second click reverses.
SORT_SCRIPT = """
document.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const down = th.dataset.down !== "1"; th.dataset.down = down ? "1" : "0";
  const key = row => { const text = row.cells[column].innerText.replace(/,/g, "");
    const number = parseFloat(text); return isNaN(number) ? text : number; };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
    return (x < y ? -1 : x > y ? 1 : 0) * (down ? -1 : 1); });
  rows.forEach(row => body.appendChild(row)); }));
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f2f2f2; cursor: pointer; } td:first-child, td:last-child { text-align: left; }
img { max-width: 48%; margin: 1em 1% 0 0; }
"""


def html_report(title: str, headings: list[str], cells: list[list[str]], advice: list[str], plots: list[Path]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    images = "".join(
        f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in plots
    )
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in advice)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        "<p>Click a heading to sort. Pareto: P on the front of accuracy against trainable %, T against training time."
        f"</p><ul>{notes}</ul>{images}<script>{SORT_SCRIPT}</script></body></html>\n"
    )
