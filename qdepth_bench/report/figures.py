"""Figures (PNG, matplotlib) from the same table views the tables print, so the numbers never differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.report.tables import TableView, method_label


def success_figure(view: TableView | None, out: Path, suite: str) -> Path | None:
    """Grouped bars: success % per task (and the whole suite) for each of our policies, 95% Wilson intervals.

    Returns None (writing nothing) when the suite has no results of ours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in (view.rows if view else []) if r.kind == "ours"]
    if view is None or not rows:
        return None
    columns = view.columns
    width = 0.8 / len(rows)
    x = np.arange(len(columns))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(columns) * max(1, len(rows)) ** 0.5 + 2), 4))
    for i, row in enumerate(rows):
        cells = [row.cells.get(c.label) for c in columns]
        rates = np.array([c.rate if c is not None and c.rate is not None else np.nan for c in cells])
        low = np.array([c.ci_low if c is not None and c.ci_low is not None else np.nan for c in cells])
        high = np.array([c.ci_high if c is not None and c.ci_high is not None else np.nan for c in cells])
        errors = np.vstack([np.nan_to_num(rates - low), np.nan_to_num(high - rates)])
        where = x + (i - (len(rows) - 1) / 2) * width
        bars = ax.bar(where, np.nan_to_num(rates), width, yerr=errors, capsize=3, label=method_label(row))
        for j, (bar, cell) in enumerate(zip(bars, cells, strict=True)):
            if cell is not None and cell.errors_only:  # no rate: say so instead of drawing a 0% bar
                ax.text(where[j], 1, f"err {cell.errors}", ha="center", va="bottom", fontsize=7, rotation=90)
            elif cell is not None and (cell.partial or cell.unfinished):  # hatched, its coverage written above
                bar.set_hatch("//")
                bar.set_alpha(0.6)
                top = high[j] if not np.isnan(high[j]) else bar.get_height()
                ax.text(where[j], min(top, 95.0) + 1, cell.marks, ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x, [c.label for c in columns], rotation=30, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel("success % (95% interval: Wilson, clustered by initial state with repeats)")
    if any(c is not None and (c.partial or c.unfinished) for r in rows for c in r.cells.values()):
        ax.set_xlabel(
            "hatched: covers only part of the protocol (tasks or trials written above), or an unfinished run",
            fontsize=7,
        )
    ax.set_title(view.title)
    ax.legend(fontsize=8)
    return save_png(fig, out)


def save_png(fig: Any, out: Path) -> Path:
    """Write a figure as PNG (folders made as needed) and free it; an unwritable path is one line."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}; choose another --out.") from None
    finally:
        plt.close(fig)
    return out
