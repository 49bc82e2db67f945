"""Grids as GitHub Markdown tables, one section per grid, footnotes below."""

from __future__ import annotations

from qdepth_bench.report.render.grid import Grid

_RULE = {"left": "---", "right": "---:", "center": ":---:"}


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render(grids: list[Grid]) -> str:
    out = []
    for grid in grids:
        lines = [
            f"### {grid.title}",
            "",
            "| " + " | ".join(_escape(c.label) for c in grid.columns) + " |",
            "|" + "|".join(_RULE[c.align] for c in grid.columns) + "|",
        ]
        for row in grid.rows:
            cells = [c.value + (f" {c.detail}" if c.detail else "") for c in row.cells]
            lines.append("| " + " | ".join(map(_escape, cells)) + " |")
        for note in grid.notes:
            lines += ["", note]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"
