"""Published numbers (`content/reference/`), as rows for the `reference_results` table.

Each published table is a wide CSV laid out as printed, described by `tables.yaml` (title, source, and which
suite and task each column measures). Most come from the QDepth-VLA paper; a table naming its own `source`
comes from elsewhere (the LIBERO-PRO authors' leaderboard). Numbers are kept as printed, including averages
that are not the mean of their row; a source printing fractions is entered in percent, as every table here is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.base import read_yaml
from qdepth_bench.registry.content import content_dirs


@dataclass(frozen=True)
class ReferenceColumn:
    label: str
    suite: str
    task: str  # "" = the whole suite; "avg" = the printed average; else a task key


@dataclass(frozen=True)
class ReferenceTable:
    id: str
    title: str
    group: str
    columns: tuple[ReferenceColumn, ...]
    path: Path
    #: a comparison of methods (ranked in the leaderboard), not an ablation or a real-robot study
    leaderboard: bool = True
    #: where the numbers were published: the table's own `source`, else the file's
    source: str = "QDepth-VLA paper"


@lru_cache(maxsize=1)
def reference_tables() -> tuple[ReferenceTable, ...]:
    """Every paper table described by a `tables.yaml` in the reference folders."""
    tables = []
    for folder in content_dirs("reference"):
        index = folder / "tables.yaml"
        if not index.is_file():
            continue
        spec = read_yaml(index)
        for t in spec.get("tables", []):
            columns = tuple(
                ReferenceColumn(label, str(c["suite"]), str(c.get("task", ""))) for label, c in t["columns"].items()
            )
            tables.append(
                ReferenceTable(
                    t["id"],
                    t["title"],
                    t["group"],
                    columns,
                    folder / t["file"],
                    bool(t.get("leaderboard", True)),
                    str(t.get("source", spec.get("source", "QDepth-VLA paper"))),
                )
            )
    return tuple(tables)


def reference_rows() -> tuple[list[dict[str, Any]], str]:
    """(rows for `reference_results`, a digest of the source files so the DB reloads when they change)."""
    rows: list[dict[str, Any]] = []
    digest = hashlib.sha256()
    for table in reference_tables():
        data = table.path.read_bytes()
        digest.update(data)
        frame = pd.read_csv(table.path, keep_default_na=False, dtype=str)
        labels = [c.label for c in table.columns]
        missing = [label for label in labels if label not in frame.columns]
        if missing:
            raise UserError(f"{table.path} lacks column '{missing[0]}' named in tables.yaml.")
        for row_order, rec in enumerate(frame.to_dict("records")):
            for column_order, column in enumerate(table.columns):
                cell = rec[column.label].strip()
                if not cell or cell == "-":
                    continue
                rows.append(
                    {
                        "source": table.source,
                        "table_id": table.id,
                        "table_title": table.title,
                        "category": rec.get("category", ""),
                        "method": rec["method"],
                        "setting": rec["setting"],
                        "column_label": column.label,
                        "column_order": column_order,
                        "suite": column.suite,
                        "task": column.task,
                        "success_rate": float(cell),
                        "row_order": row_order,
                    }
                )
    return rows, digest.hexdigest()[:16]
