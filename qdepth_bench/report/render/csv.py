"""Grids as CSV: the flat records behind each grid (one per table cell, or per ablation variant), every
number with its n, interval and coverage, so a paper's numbers can be recomputed from it."""

from __future__ import annotations

import csv
import io

from qdepth_bench.report.render.grid import Grid


def render(grids: list[Grid]) -> str:
    records = [record for grid in grids for record in grid.records]
    fields: list[str] = []
    for record in records:
        fields += [k for k in record if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields or ["table"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()
