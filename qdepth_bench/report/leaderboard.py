"""The leaderboard: every policy over every suite it has results for, ranked, beside the paper's
published rows (marked as such).

It is the comparison tables (the paper's Tables 2-4 layouts, plus one table per suite the paper does not
cover) with rows ranked by their last column: the average over the table's suites or tasks, or the suite
itself. A row without that number, or whose number covers only part of the protocol (some tasks, or fewer
trials), is listed after the ranked rows, unranked, so a partial evaluation is never ranked against
complete ones.
"""

from __future__ import annotations

from qdepth_bench.report.tables import TableView, build_tables
from qdepth_bench.results.reference import reference_tables
from qdepth_bench.results.store import Store


def rank_rows(view: TableView) -> TableView:
    """Sort a view's rows by its last column (descending) and number them (ties share a rank); rows
    without that number go last, unranked."""
    key = view.columns[-1].label
    rated = [
        r
        for r in view.rows
        if r.cells.get(key) is not None and r.cells[key].rate is not None and not r.cells[key].partial
    ]
    unrated = [r for r in view.rows if r not in rated]
    rate = {id(r): float(r.cells[key].rate or 0.0) for r in rated}
    rated.sort(key=lambda r: -rate[id(r)])
    for position, row in enumerate(rated, start=1):  # ties share the better rank (1, 1, 3, ...)
        previous = rated[position - 2] if position > 1 else None
        same = previous is not None and round(rate[id(previous)], 6) == round(rate[id(row)], 6)
        row.rank = previous.rank if previous is not None and same else position
    return TableView(view.id, view.title, view.columns, rated + unrated)


def build_leaderboard(store: Store) -> list[TableView]:
    """Ranked comparison tables over everything in the database and the paper's comparison tables."""
    hidden = {t.id for t in reference_tables() if not t.leaderboard}
    return [rank_rows(view) for view in build_tables(store, None, reference=True) if view.id not in hidden]
