"""Figures (PNG, matplotlib) from the same table views the tables print, so the numbers never differ."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .tables import TableView


def success_figure(view: TableView | None, out: Path, suite: str) -> Path | None:
    """Grouped bars: success % per task (and the whole suite) for each of our policies, 95% Wilson intervals.

    Returns None (writing nothing) when the suite has no results of ours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in (view.rows if view else []) if r.kind == "ours"]
    if not rows:
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
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, np.nan_to_num(rates), width, yerr=errors, capsize=3,
               label=row.method + ("" if row.standard_protocol else " †"))
    ax.set_xticks(x, [c.label for c in columns], rotation=30, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel("success % (95% Wilson interval)")
    ax.set_title(view.title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}; choose another --out.") from None
    finally:
        plt.close(fig)
    return out
