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
    """One success rate. `rate` in percent; n = successes + failures (errors excluded).

    Our cells also say what they cover: the tasks with scored episodes out of the tasks the column spans,
    and the fewest scored trials of a covered task against that task's protocol trials. A cell short of
    either is partial: shown with its coverage, never averaged with others and never ranked.
    """

    rate: float | None
    n: int = 0
    successes: int = 0
    errors: int = 0
    ci_low: float | None = None
    ci_high: float | None = None
    tasks_covered: int | None = None
    tasks_total: int | None = None
    trials_per_task: int | None = None
    protocol_trials: int | None = None
    #: some of its episodes come from a run that has not finished (interrupted, crashed or still running)
    unfinished: bool = False

    @property
    def partial(self) -> bool:
        return bool(self.coverage)

    @property
    def coverage(self) -> str:
        """'2/10 tasks', '10/50 trials', both, or '' for a cell that covers its whole protocol."""
        if self.tasks_total is None or self.tasks_covered is None:
            return ""
        parts = []
        if self.tasks_covered < self.tasks_total:
            parts.append(f"{self.tasks_covered}/{self.tasks_total} tasks")
        if self.trials_per_task is not None and self.protocol_trials and self.trials_per_task < self.protocol_trials:
            parts.append(f"{self.trials_per_task}/{self.protocol_trials} trials")
        return ", ".join(parts)

    @property
    def marks(self) -> str:
        """Its coverage and whether its run finished, as shown beside the rate ('' for neither)."""
        return ", ".join(m for m in (self.coverage, "unfinished" if self.unfinished else "") if m)

    @property
    def errors_only(self) -> bool:
        return self.rate is None and self.errors > 0


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
    ("†", lambda row: not row.standard_protocol,
     "measured under a non-standard protocol (not comparable with published numbers)"),
    ("‡", lambda row: not row.standard_execution,
     "the policy's action chunks are shorter than the protocol's replan steps, so it re-planned after fewer "
     "actions than the protocol executes (not comparable with published numbers)"),
)


def method_label(row: Row) -> str:
    """The row's method name followed by its marks."""
    return row.method + "".join(f" {symbol}" for symbol, applies, _ in ROW_MARKS if applies(row))


#: what a mark inside our cells means: (shown when, footnote)
CELL_NOTES: tuple[tuple[Callable[[Cell], bool], str], ...] = (
    (lambda c: c.partial, "k/N tasks, k/N trials: the cell covers only part of the protocol (tasks of the suite, "
                          "or trials per task); it is not a suite score beside published ones, and it is never "
                          "averaged into Avg nor ranked"),
    (lambda c: c.unfinished, "unfinished: some of the cell's episodes come from a run that did not finish "
                             "(interrupted, crashed or still running)"),
    (lambda c: c.errors_only, "err N: every episode of the cell ended in an error, so it has no rate"),
)


def mark_notes(rows: list[Row]) -> list[str]:
    """The footnotes of the marks that appear on these rows and in their cells."""
    cells = [c for r in rows if r.kind == "ours" for c in r.cells.values()]
    return ([f"{symbol} {note}" for symbol, applies, note in ROW_MARKS if any(applies(r) for r in rows)]
            + [note for applies, note in CELL_NOTES if any(applies(c) for c in cells)])


def _cell(episodes: pd.DataFrame, protocol_trials: dict[int, int] | None = None) -> Cell:
    """Aggregate episodes into a cell; errors are reported apart and left out of the rate.

    `protocol_trials` maps each task the cell spans to its protocol trials; the cell's coverage is measured
    against it (None: a cell with no protocol to cover, e.g. a published one)."""
    errors = int((episodes["status"] == "error").sum())
    scored = episodes[episodes["status"] != "error"]
    n, k = len(scored), int((scored["status"] == "success").sum())
    cell = Cell(None, 0, 0, errors, unfinished=bool((episodes["run_status"] != "finished").any()))
    if protocol_trials and not episodes.empty:  # an empty cell prints '–' and needs no coverage mark
        per_task = scored.groupby("task_id").size()
        covered = [t for t in protocol_trials if per_task.get(t, 0) > 0]
        cell.tasks_covered, cell.tasks_total = len(covered), len(protocol_trials)
        if covered:
            worst = min(covered, key=lambda t: per_task[t] / protocol_trials[t])
            cell.trials_per_task, cell.protocol_trials = int(per_task[worst]), protocol_trials[worst]
    if n == 0:
        return cell
    low, high = wilson_interval(k, n)
    cell.rate, cell.n, cell.successes, cell.ci_low, cell.ci_high = 100.0 * k / n, n, k, 100.0 * low, 100.0 * high
    return cell


def _average(cells: list[Cell]) -> Cell:
    """Mean of column rates, shown only when every column has a rate over its whole protocol (a mean of
    partial cells, or of partial and full ones, would read as a score nobody measured)."""
    if not cells or any(c.rate is None or c.partial for c in cells):
        return Cell(None)
    return Cell(sum(c.rate for c in cells) / len(cells), sum(c.n for c in cells),
                sum(c.successes for c in cells), sum(c.errors for c in cells),
                unfinished=any(c.unfinished for c in cells))


def suite_trials(suite: str) -> dict[int, int] | None:
    """Each task of a registered suite -> its protocol trials (None for a name that is no suite)."""
    spec = suite_registry().suites.get(suite)
    return dict(enumerate(spec.task_episode_counts())) if spec is not None else None


def protocol_trials(trials: dict[int, int] | None, task: str, episodes: pd.DataFrame) -> dict[int, int] | None:
    """The part of a suite's `trials` a column spans: all of it, or one task given by id or name."""
    if not trials or not task:
        return trials
    ids = {int(t) for t in episodes["task_id"].unique()} or ({int(task)} if task.isdigit() else set())
    return {t: trials[t] for t in ids if t in trials} or None


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
    trials = {c.suite: suite_trials(c.suite) for c in columns if c.task != "avg"}
    for (row_key, label, setting), group in in_view.groupby(["row_key", "label", "setting"], sort=True):
        short = group["actions_per_call"].notna() & group["replan_steps"].notna() & (
            group["actions_per_call"] < group["replan_steps"])
        row = Row("ours", label, setting, run_ids=tuple(sorted(group["run_id"].unique())),
                  standard_protocol=bool(group["standard_protocol"].all()), standard_execution=not bool(short.any()))
        for column in columns:
            if column.task == "avg":
                continue
            part = group[group["suite"] == column.suite]
            if column.task:
                part = part[(part["task_id"].astype(str) == column.task) | (part["task_name"] == column.task)]
            row.cells[column.label] = _cell(part, protocol_trials(trials[column.suite], column.task, part))
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
                    "tasks_covered": cell.tasks_covered, "tasks_total": cell.tasks_total,
                    "trials_per_task": cell.trials_per_task, "protocol_trials_per_task": cell.protocol_trials,
                    "complete": None if row.kind != "ours" else not cell.partial,
                    "run_finished": None if row.kind != "ours" else not cell.unfinished,
                    "standard_protocol": row.standard_protocol, "standard_execution": row.standard_execution,
                    "run_ids": json.dumps(list(row.run_ids)),
                    "rank": row.rank,
                })
    return records
