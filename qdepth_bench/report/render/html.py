"""Grids as one standalone HTML page (inline style, no scripts): published rows marked, partial or
unfinished cells highlighted with the reason in their tooltip."""

from __future__ import annotations

import html

from qdepth_bench.report.render.grid import Grid, GridCell

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1d1d1f; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.3rem 0.7rem; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f5; } td.text, th.text { text-align: left; } td.center, th.center { text-align: center; }
tr.published { color: #666; font-style: italic; }
tr.ours { font-weight: 600; }
.badge { font-size: 0.7rem; padding: 0.1rem 0.4rem; border-radius: 0.6rem; background: #e5e5ea; font-style: normal; }
tr.ours .badge { background: #d4f0dc; }
small { color: #777; font-weight: normal; display: block; }
td.partial { background: #fff6e0; } td.partial small { color: #8a5a00; }
"""
_CLASS = {"left": ' class="text"', "center": ' class="center"', "right": ""}


def _cell(cell: GridCell, align: str, badge: bool) -> str:
    esc = html.escape
    body = f'<span class="badge">{esc(cell.value)}</span>' if badge else esc(cell.value)
    body += f"<small>{esc(cell.detail)}</small>" if cell.detail else ""
    if cell.why:
        return f'<td class="partial" title="{esc(cell.why)}">{body}</td>'
    return f"<td{_CLASS[align]}>{body}</td>"


def render(grids: list[Grid], title: str = "qdepth-bench") -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for grid in grids:
        parts.append(f"<h2>{esc(grid.title)}</h2>")
        parts.append(
            f'<table id="{esc(grid.id)}"><thead><tr>'
            + "".join(f"<th{_CLASS[c.align]}>{esc(c.label)}</th>" for c in grid.columns)
            + "</tr></thead><tbody>"
        )
        for row in grid.rows:
            parts.append(
                f'<tr class="{row.kind}">'
                + "".join(
                    _cell(cell, column.align, column.label == "Source")
                    for cell, column in zip(row.cells, grid.columns, strict=True)
                )
                + "</tr>"
            )
        parts.append("</tbody></table>")
        parts += [f"<p><small>{esc(note)}</small></p>" for note in grid.notes]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
