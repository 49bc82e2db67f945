"""Comparison tables: our runs' success rates beside the paper's published rows.

A table view has columns that each measure one suite (or one task of a suite, or the average of the other
columns) and rows that are either published (from `reference_results`) or ours (aggregated from episodes).
Our cells carry n, the error count and a 95% Wilson interval; errors are never counted as failures.
By default each policy row uses the latest finished run of that policy on each suite (the latest started
one when none has finished); explicit run ids pick runs instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from ..errors import UserError
from ..reference import reference_tables
from ..registry import suite_registry
from ..store import Store
from .stats import wilson_interval


@dataclass(frozen=True)
class Column:
    label: str
    suite: str
    task: str = ""  # "" = whole suite, "avg" = mean of the other columns, else a task id or name


@dataclass
class Cell:
    """One success rate. `rate` in percent; n = successes + failures (errors excluded)."""

    rate: float | None
    n: int = 0
    successes: int = 0
    errors: int = 0
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass
class Row:
    kind: str  # "published" or "ours"
    method: str
    setting: str
    category: str = ""
    run_ids: tuple[str, ...] = ()
    standard_protocol: bool = True
    cells: dict[str, Cell] = field(default_factory=dict)
    rank: int | None = None  # set by the leaderboard


@dataclass
class TableView:
    id: str
    title: str
    columns: list[Column]
    rows: list[Row]


def _cell(episodes: pd.DataFrame) -> Cell:
    """Aggregate episodes into a cell; errors are reported apart and left out of the rate."""
    errors = int((episodes["status"] == "error").sum())
    scored = episodes[episodes["status"] != "error"]
    n, k = len(scored), int((scored["status"] == "success").sum())
    if n == 0:
        return Cell(None, 0, 0, errors)
    low, high = wilson_interval(k, n)
    return Cell(100.0 * k / n, n, k, errors, 100.0 * low, 100.0 * high)


def _average(cells: list[Cell]) -> Cell:
    """Mean of column rates, shown only when every column has a rate (a partial mean would mislead)."""
    if not cells or any(c.rate is None for c in cells):
        return Cell(None)
    return Cell(sum(c.rate for c in cells) / len(cells), sum(c.n for c in cells),
                sum(c.successes for c in cells), sum(c.errors for c in cells))


def _select_runs(episodes: pd.DataFrame, explicit: bool) -> pd.DataFrame:
    """Keep, per (policy row, suite), the episodes of the latest finished run (or, if none has finished,
    the most recently started one)."""
    if explicit or episodes.empty:
        return episodes
    order = episodes.assign(finished=episodes["run_status"] == "finished").sort_values(["finished", "run_started_at"])
    latest = order.groupby(["row_key", "suite"], sort=False)["run_id"].last()
    return episodes[episodes["run_id"].isin(set(latest.values))]


def _our_rows(episodes: pd.DataFrame, columns: list[Column]) -> list[Row]:
    rows = []
    in_view = episodes[episodes["suite"].isin({c.suite for c in columns})]
    for (row_key, label, setting), group in in_view.groupby(["row_key", "label", "setting"], sort=True):
        row = Row("ours", label, setting, run_ids=tuple(sorted(group["run_id"].unique())),
                  standard_protocol=bool(group["standard_protocol"].all()))
        for column in columns:
            if column.task == "avg":
                continue
            part = group[group["suite"] == column.suite]
            if column.task:
                part = part[(part["task_id"].astype(str) == column.task) | (part["task_name"] == column.task)]
            row.cells[column.label] = _cell(part)
        for column in columns:
            if column.task == "avg":
                row.cells[column.label] = _average([row.cells[c.label] for c in columns if c.task != "avg"])
        if any(c.rate is not None or c.errors for c in row.cells.values()):
            rows.append(row)
    return rows


def _published_rows(references: pd.DataFrame, table_id: str, columns: list[Column]) -> list[Row]:
    part = references[references["table_id"] == table_id].sort_values(["row_order", "column_order"])
    rows: dict[int, Row] = {}
    labels = {c.label for c in columns}
    for rec in part.to_dict("records"):
        row = rows.setdefault(rec["row_order"], Row("published", rec["method"], rec["setting"], rec["category"]))
        if rec["column_label"] in labels:
            row.cells[rec["column_label"]] = Cell(float(rec["success_rate"]))
    return list(rows.values())


def _suite_published_rows(references: pd.DataFrame, suite: str, label: str) -> list[Row]:
    """Published whole-suite numbers of one suite, from whichever paper table has them."""
    part = references[(references["suite"] == suite) & (references["task"] == "")]
    return [Row("published", r["method"], r["setting"], r["category"], cells={label: Cell(float(r["success_rate"]))})
            for r in part.sort_values(["table_id", "row_order"]).to_dict("records")]


def _label_rows(episodes: pd.DataFrame) -> pd.DataFrame:
    """Add row keys (policy identity + setting) and labels, disambiguating same-named identities."""
    episodes = episodes.copy()
    identity = episodes["policy_name"] + "@" + episodes["policy_config_hash"] + episodes["policy_checkpoint_hash"]
    episodes["row_key"] = identity + "/" + episodes["setting"]
    names = episodes.groupby("policy_name")["row_key"].nunique()
    ambiguous = set(names[names > 1].index)
    episodes["label"] = [
        (f"{name} [{cfg[:6]}]" if name in ambiguous else name) + (f" ({backend})" if backend in SIMULATOR_TAGGED else "")
        for name, cfg, backend in zip(episodes["policy_name"], episodes["policy_config_hash"], episodes["backend"],
                                      strict=True)
    ]
    return episodes


#: backends whose numbers differ by simulator (SIMPLER): rows say which one produced them, never pooled
SIMULATOR_TAGGED = ("maniskill3", "simpler_env")


def _stand_ins(episodes: pd.DataFrame) -> pd.Series:
    """Which episodes ran with stand-in assets (e.g. ManiSkill3's table stage replaced by a box)."""
    return episodes["metrics"].fillna("").str.contains('"stand_in_table": true', regex=False)


def _episodes(store: Store, policies: list[str] | None, run_ids: list[str] | None,
              stand_ins: bool = False) -> pd.DataFrame:
    ids = [store.run(r)["run_id"] for r in run_ids] if run_ids else None
    frame = store.episodes_frame(ids)
    if not frame.empty:
        stand_in = _stand_ins(frame)
        if stand_ins:  # shown on request, and marked as not the published protocol
            frame = frame.assign(standard_protocol=frame["standard_protocol"].where(~stand_in, 0))
        else:
            frame = frame[~stand_in]
    if policies:
        known = set(frame["policy_name"])
        unknown = [p for p in policies if p not in known]
        if unknown:
            raise UserError(f"no results for policy '{unknown[0]}' in {store.path}"
                            + (f"; policies with results: {', '.join(sorted(known))}." if known else "."))
        frame = frame[frame["policy_name"].isin(policies)]
    return _select_runs(_label_rows(frame), explicit=bool(run_ids))


def _suite_view(suite: str, tasks: list[str], episodes: pd.DataFrame, references: pd.DataFrame,
                reference: bool) -> TableView:
    spec = suite_registry().suites[suite]
    columns = [Column(f"T{t}", suite, t) for t in tasks] + [Column(spec.label, suite, "")]
    rows = _suite_published_rows(references, suite, spec.label) if reference else []
    return TableView(suite, f"{suite}: success % per task", columns, rows + _our_rows(episodes, columns))


def _group_view(group: str, members: list[str], episodes: pd.DataFrame) -> TableView:
    registry = suite_registry()
    columns = [Column(registry.suites[m].label, m, "") for m in members]
    columns.append(Column("Avg", group, "avg"))
    return TableView(group, f"{group}: success % per suite", columns, _our_rows(episodes, columns))


def build_tables(store: Store, suite: str | None = None, policies: list[str] | None = None,
                 run_ids: list[str] | None = None, reference: bool = True, stand_ins: bool = False) -> list[TableView]:
    """The table views for a suite (or group), or for everything when `suite` is None. Episodes run with
    stand-in assets are left out unless `stand_ins`."""
    episodes = _episodes(store, policies, run_ids, stand_ins)
    references = store.references_frame()
    paper = reference_tables()
    registry = suite_registry()
    views: list[TableView] = []
    if suite is not None:
        name = registry.aliases.get(suite, suite)
        if name in registry.suites:
            present = sorted(episodes.loc[episodes["suite"] == name, "task_id"].unique())
            tasks = [str(t) for t in (present or range(registry.suites[name].n_tasks))]
            return [_suite_view(name, tasks, episodes, references, reference)]
        known_groups = {t.group for t in paper} | set(registry.groups)
        if name not in known_groups:
            registry.resolve(name)  # raises the unknown-suite error with suggestions
        layouts = [t for t in paper if t.group == name][:1]
        if not layouts:
            return [_group_view(name, list(registry.groups[name]), episodes)]
        paper = tuple(layouts)
    covered: set[str] = set()
    for table in paper:
        columns = [Column(c.label, c.suite, c.task) for c in table.columns]
        ours = _our_rows(episodes, columns)
        rows = (_published_rows(references, table.id, columns) if reference else []) + ours
        covered |= {c.suite for c in columns}
        if rows:
            views.append(TableView(table.id, table.title, columns, rows))
    if suite is None:
        for name in sorted(set(episodes["suite"]) - covered):
            views.append(_group_view(name, [name], episodes))
    return views


def table_records(views: list[TableView]) -> list[dict]:
    """One flat record per cell (the CSV form): every number a table shows, with its n and interval."""
    records = []
    for view in views:
        for row in view.rows:
            for column in view.columns:
                cell = row.cells.get(column.label)
                if cell is None:
                    continue
                records.append({
                    "table": view.id, "kind": row.kind, "category": row.category, "method": row.method,
                    "setting": row.setting, "column": column.label, "suite": column.suite, "task": column.task,
                    "success_rate": None if cell.rate is None else round(cell.rate, 4),
                    "n": cell.n if row.kind == "ours" else None,
                    "successes": cell.successes if row.kind == "ours" else None,
                    "errors": cell.errors if row.kind == "ours" else None,
                    "ci_low": None if cell.ci_low is None or math.isnan(cell.ci_low) else round(cell.ci_low, 4),
                    "ci_high": None if cell.ci_high is None or math.isnan(cell.ci_high) else round(cell.ci_high, 4),
                    "standard_protocol": row.standard_protocol, "run_ids": json.dumps(list(row.run_ids)),
                    "rank": row.rank,
                })
    return records
