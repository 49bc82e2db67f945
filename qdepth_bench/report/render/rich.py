"""Grids as rich tables for the terminal: published rows dimmed, each cell's interval and n in small print."""

from __future__ import annotations

from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from qdepth_bench.report.render.grid import Grid

_JUSTIFY: dict[str, JustifyMethod] = {"left": "left", "right": "right", "center": "center"}


def render(grids: list[Grid]) -> list[Table]:
    tables = []
    for grid in grids:
        table = Table(title=escape(grid.title), title_justify="left")
        for column in grid.columns:
            table.add_column(escape(column.label), justify=_JUSTIFY[column.align])
        for row in grid.rows:
            table.add_row(
                *(escape(c.value) + (f"\n[dim]{escape(c.detail)}[/dim]" if c.detail else "") for c in row.cells),
                style="dim" if row.kind == "published" else None,
            )
        if grid.notes:
            table.caption = escape("\n".join(grid.notes))
        tables.append(table)
    return tables
