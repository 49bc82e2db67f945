"""Rescue a damaged results database: copy every row that can still be read into a new one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from qdepth_bench.core.errors import UserError
from qdepth_bench.results.store import Store

#: the tables `salvage` copies, parents first (claims are not worth keeping: their sessions are over)
SALVAGED_TABLES = ("runs", "run_sessions", "episodes")


def salvage(damaged: Path, out: Path) -> dict[str, tuple[int, int]]:
    """Copy every row of `damaged` that can still be read into a new database at `out`, row by row, so one
    bad page loses only the rows on it; returns {table: (rows copied, rows unreadable)}. The damaged file
    is opened read-only and never written."""
    if out.exists():
        raise UserError(f"--out {out} exists; salvage writes a new database, give a path that does not exist.")
    source = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    target = Store(out)
    counts: dict[str, tuple[int, int]] = {}
    try:
        for table in SALVAGED_TABLES:
            try:
                columns = [r[1] for r in source.execute(f"pragma table_info({table})")]
                last = source.execute(f"select max(rowid) from {table}").fetchone()[0] or 0
            except sqlite3.DatabaseError:
                counts[table] = (0, -1)  # the table's own structure is unreadable
                continue
            keep = [c for c in columns if c in target.db.table(table).columns_dict]
            copied = lost = 0
            for rowid in range(1, last + 1):
                try:
                    row = source.execute(f"select {', '.join(keep)} from {table} where rowid = ?", [rowid]).fetchone()
                except sqlite3.DatabaseError:
                    lost += 1
                    continue
                if row is not None:
                    with target.db.conn:
                        target.db.table(table).insert(dict(zip(keep, row, strict=True)), replace=True)
                    copied += 1
            counts[table] = (copied, lost)
    finally:
        source.close()
    return counts
