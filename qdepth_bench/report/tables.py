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
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from qdepth_bench.registry.suites import suite_registry, suite_trials
from qdepth_bench.report.cells import Cell, average, cell_of, protocol_trials, task_episodes
from qdepth_bench.report.episodes import load_episodes
from qdepth_bench.results.reference import reference_tables
from qdepth_bench.results.store import Store


@dataclass(frozen=True)
class Column:
    label: str
    suite: str
    task: str = ""  # "" = whole suite, "avg" = mean of the other columns, else a task id or name


@dataclass
class Row:
    kind: str  # "published" or "ours"
    method: str
    setting: str
    category: str = ""
    run_ids: tuple[str, ...] = ()
    standard_protocol: bool = True
    #: False when the policy's chunks were shorter than the protocol's replan steps (it re-planned sooner)
    standard_execution: bool = True
    cells: dict[str, Cell] = field(default_factory=dict)
    rank: int | None = None  # set by the leaderboard


@dataclass
class TableView:
    id: str
    title: str
    columns: list[Column]
    rows: list[Row]


#: marks after a method name, each with the footnote that explains it: (symbol, applies to row, footnote)
ROW_MARKS: tuple[tuple[str, Callable[[Row], bool], str], ...] = (
    (
        "†",
        lambda row: not row.standard_protocol,
        "measured under a non-standard protocol (not comparable with published numbers)",
    ),
    (
        "‡",
        lambda row: not row.standard_execution,
        "the policy's action chunks are shorter than the protocol's replan steps, so it re-planned after fewer "
        "actions than the protocol executes (not comparable with published numbers)",
    ),
)


def method_label(row: Row) -> str:
    """The row's method name followed by its marks."""
    return row.method + "".join(f" {symbol}" for symbol, applies, _ in ROW_MARKS if applies(row))


#: what a mark inside our cells means: (shown when, footnote)
CELL_NOTES: tuple[tuple[Callable[[Cell], bool], str], ...] = (
    (
        lambda c: c.partial,
        "k/N tasks, k/N trials: the cell covers only part of the protocol (tasks of the suite, "
        "or trials per task); it is not a suite score beside published ones, and it is never "
        "averaged into Avg nor ranked",
    ),
    (
        lambda c: c.unfinished,
        "unfinished: some of the cell's episodes come from a run that did not finish "
        "(interrupted, crashed or still running)",
    ),
    (
        lambda c: c.machines > 1,
        "N machines: the run was recorded on machines with different fingerprints (`qdepth-bench runs show RUN`); "
        "closed-loop episodes can end differently from one machine to another",
    ),
    (
        lambda c: c.repeats > 1,
        "N repeats: every episode ran N times with seeds of its own; the rate pools them and its interval "
        "counts each initial state once (Wilson's on the effective sample size, docs/statistics.md)",
    ),
    (lambda c: c.errors_only, "err N: every episode of the cell ended in an error, so it has no rate"),
)


def mark_notes(rows: list[Row]) -> list[str]:
    """The footnotes of the marks that appear on these rows and in their cells."""
    cells = [c for r in rows if r.kind == "ours" for c in r.cells.values()]
    return [f"{symbol} {note}" for symbol, applies, note in ROW_MARKS if any(applies(r) for r in rows)] + [
        note for applies, note in CELL_NOTES if any(applies(c) for c in cells)
    ]


def _our_rows(episodes: pd.DataFrame, columns: list[Column]) -> list[Row]:
    rows = []
    in_view = episodes[episodes["suite"].isin({c.suite for c in columns})]
    trials = {c.suite: suite_trials(c.suite) for c in columns if c.task != "avg"}
    for (_, label, setting), group in in_view.groupby(["row_key", "label", "setting"], sort=True):
        short = (
            group["actions_per_call"].notna()
            & group["replan_steps"].notna()
            & (group["actions_per_call"] < group["replan_steps"])
        )
        row = Row(
            "ours",
            label,
            setting,
            run_ids=tuple(sorted(group["run_id"].unique())),
            standard_protocol=bool(group["standard_protocol"].all()),
            standard_execution=not bool(short.any()),
        )
        for column in columns:
            if column.task == "avg":
                continue
            part = group[group["suite"] == column.suite]
            if column.task:
                part = task_episodes(part, column.task)
            row.cells[column.label] = cell_of(part, protocol_trials(trials[column.suite], column.task, part))
        for column in columns:
            if column.task == "avg":
                row.cells[column.label] = average([row.cells[c.label] for c in columns if c.task != "avg"])
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
    return [
        Row("published", r["method"], r["setting"], r["category"], cells={label: Cell(float(r["success_rate"]))})
        for r in part.sort_values(["table_id", "row_order"]).to_dict("records")
    ]


def _suite_view(
    suite: str, tasks: list[str], episodes: pd.DataFrame, references: pd.DataFrame, reference: bool
) -> TableView:
    spec = suite_registry().suites[suite]
    columns = [Column(f"T{t}", suite, t) for t in tasks] + [Column(spec.label, suite, "")]
    rows = _suite_published_rows(references, suite, spec.label) if reference else []
    return TableView(suite, f"{suite}: success % per task", columns, rows + _our_rows(episodes, columns))


def _group_view(group: str, members: list[str], episodes: pd.DataFrame) -> TableView:
    registry = suite_registry()
    columns = [Column(registry.suites[m].label, m, "") for m in members]
    columns.append(Column("Avg", group, "avg"))
    return TableView(group, f"{group}: success % per suite", columns, _our_rows(episodes, columns))


def build_tables(
    store: Store,
    suite: str | None = None,
    policies: list[str] | None = None,
    run_ids: list[str] | None = None,
    reference: bool = True,
    stand_ins: bool = False,
) -> list[TableView]:
    """The table views for a suite (or group), or for everything when `suite` is None. Episodes run with
    stand-in assets are left out unless `stand_ins`."""
    episodes = load_episodes(store, policies, run_ids, stand_ins)
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
                records.append(
                    {
                        "table": view.id,
                        "kind": row.kind,
                        "category": row.category,
                        "method": row.method,
                        "setting": row.setting,
                        "column": column.label,
                        "suite": column.suite,
                        "task": column.task,
                        "success_rate": None if cell.rate is None else round(cell.rate, 4),
                        "n": cell.n if row.kind == "ours" else None,
                        "successes": cell.successes if row.kind == "ours" else None,
                        "errors": cell.errors if row.kind == "ours" else None,
                        "ci_low": None if cell.ci_low is None or math.isnan(cell.ci_low) else round(cell.ci_low, 4),
                        "ci_high": None if cell.ci_high is None or math.isnan(cell.ci_high) else round(cell.ci_high, 4),
                        "tasks_covered": cell.tasks_covered,
                        "tasks_total": cell.tasks_total,
                        "trials_per_task": cell.trials_per_task,
                        "protocol_trials_per_task": cell.protocol_trials,
                        "complete": None if row.kind != "ours" else not cell.partial,
                        "run_finished": None if row.kind != "ours" else not cell.unfinished,
                        "repeats": cell.repeats if row.kind == "ours" else None,
                        "repeat_rates": json.dumps(list(cell.repeat_rates)) if cell.repeat_rates else None,
                        "standard_protocol": row.standard_protocol,
                        "standard_execution": row.standard_execution,
                        "run_ids": json.dumps(list(row.run_ids)),
                        "rank": row.rank,
                    }
                )
    return records
