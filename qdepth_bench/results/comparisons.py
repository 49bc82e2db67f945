"""Paired comparisons (`qdepth-bench compare`): one row per comparison of two runs on one list of tasks, with
its design fixed before the first episode and its latest state. The table is made on first use, so opening a
database for a report never writes to it."""

from __future__ import annotations

import time
from typing import Any

from qdepth_bench.results.store import Store

#: one row per comparison of two runs on one list of tasks: its fixed design and its latest state
TABLE = "paired_comparisons"
COLUMNS: dict[str, type] = {
    "comparison_id": str,
    "run_a": str,
    "run_b": str,
    "suite": str,
    "tasks": str,
    "sequential": int,
    "design": str,
    "status": str,
    "decision": str,
    "pairs_used": int,
    "pairs_run": int,
    "pairs_lost": int,
    "result": str,
    "command": str,
    "created_at": float,
    "updated_at": float,
}


def recorded_comparison(store: Store, comparison_id: str) -> dict[str, Any] | None:
    """The comparison's recorded row, if any (its table created on first use, beside the store's own)."""
    with store.db.conn:
        store.db.table(TABLE).create(COLUMNS, pk="comparison_id", if_not_exists=True)
    rows = list(store.db.query(f"select * from {TABLE} where comparison_id = ?", [comparison_id]))
    return rows[0] if rows else None


def save_comparison(store: Store, row: dict[str, Any]) -> None:
    """Record the comparison's latest state."""
    with store.db.conn:
        store.db.table(TABLE).upsert({**row, "updated_at": time.time()}, pk="comparison_id")


def comparisons_of(store: Store, run_a: str, run_b: str) -> list[dict[str, Any]]:
    """The recorded comparisons of run A with run B (one per list of tasks), latest first; none when no
    comparison was ever recorded (the table is not made here, so a report leaves the database as it is)."""
    if not store.db.table(TABLE).exists():
        return []
    query = f"select * from {TABLE} where run_a = ? and run_b = ? order by updated_at desc"
    return list(store.db.query(query, [run_a, run_b]))
