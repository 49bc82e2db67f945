"""Output formats, each one module with one `render(grids)`, serving every view (tables, leaderboard,
ablations) through `grid.py`. A new format is one module plus one line in `FORMATS`."""

from __future__ import annotations

import importlib
from typing import Any

from qdepth_bench.report.render.grid import grids

#: the formats, each the name of its module under report/render/
FORMATS = ("rich", "markdown", "csv", "latex", "html")


def render(fmt: str, views: list[Any], **options: Any) -> Any:
    """Views in one format: text for files, rich tables for `rich`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"qdepth_bench.report.render.{fmt}")
    return module.render(grids(views), **options)
