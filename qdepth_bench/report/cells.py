"""One success-rate cell and how cells are made from episodes: what it counts, what part of the protocol it
covers, and averages of cells. Tables and ablations share these."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from qdepth_bench.report.stats import clustered_interval, wilson_interval


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
    #: machines (fingerprints) that recorded its episodes; more than one is said beside the rate
    machines: int = 1
    #: runs of each episode (`run --repeats`); with more than one the interval is clustered by initial state
    repeats: int = 1
    #: success rate (percent) of each repeat, in repeat order, when there are several
    repeat_rates: tuple[float, ...] = ()

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
        """Its coverage, whether its run finished and whether machines were mixed, as shown beside the rate."""
        mixed = f"{self.machines} machines" if self.machines > 1 else ""
        repeated = f"{self.repeats} repeats" if self.repeats > 1 else ""
        return ", ".join(m for m in (self.coverage, "unfinished" if self.unfinished else "", mixed, repeated) if m)

    @property
    def errors_only(self) -> bool:
        return self.rate is None and self.errors > 0


def cell_of(episodes: pd.DataFrame, protocol_trials: dict[int, int] | None = None) -> Cell:
    """Aggregate episodes into a cell; errors are reported apart and left out of the rate.

    `protocol_trials` maps each task the cell spans to its protocol trials; the cell's coverage is measured
    against it (None: a cell with no protocol to cover, e.g. a published one)."""
    errors = int((episodes["status"] == "error").sum())
    scored = episodes[episodes["status"] != "error"]
    n, k = len(scored), int((scored["status"] == "success").sum())
    cell = Cell(
        None,
        0,
        0,
        errors,
        unfinished=bool((episodes["run_status"] != "finished").any()),
        machines=int(episodes["run_machines"].max()) if not episodes.empty else 1,
    )
    if protocol_trials and not episodes.empty:  # an empty cell prints '–' and needs no coverage mark
        per_task = scored.groupby("task_id")["episode_index"].nunique()  # trials: repeats count once
        covered = [t for t in protocol_trials if per_task.get(t, 0) > 0]
        cell.tasks_covered, cell.tasks_total = len(covered), len(protocol_trials)
        if covered:
            worst = min(covered, key=lambda t: per_task[t] / protocol_trials[t])
            cell.trials_per_task, cell.protocol_trials = int(per_task[worst]), protocol_trials[worst]
    if n == 0:
        return cell
    low, high = wilson_interval(k, n)
    cell.repeats = int(scored["repeat"].max()) + 1
    if cell.repeats > 1:  # repeats of one initial state are one cluster
        won = scored["status"] == "success"
        clusters = won.groupby([scored["task_id"], scored["episode_index"]])
        low, high = clustered_interval(clusters.sum().astype(int).tolist(), clusters.size().tolist())
        per_repeat = won.groupby(scored["repeat"]).mean()
        cell.repeat_rates = tuple(round(100.0 * float(per_repeat.get(r, math.nan)), 4) for r in range(cell.repeats))
    cell.rate, cell.n, cell.successes, cell.ci_low, cell.ci_high = 100.0 * k / n, n, k, 100.0 * low, 100.0 * high
    return cell


def average(cells: list[Cell]) -> Cell:
    """Mean of column rates, shown only when every column has a rate over its whole protocol (a mean of
    partial cells, or of partial and full ones, would read as a score nobody measured)."""
    if not cells or any(c.rate is None or c.partial for c in cells):
        return Cell(None)
    rates = [c.rate for c in cells if c.rate is not None]
    return Cell(
        sum(rates) / len(cells),
        sum(c.n for c in cells),
        sum(c.successes for c in cells),
        sum(c.errors for c in cells),
        unfinished=any(c.unfinished for c in cells),
        machines=max(c.machines for c in cells),
        repeats=max(c.repeats for c in cells),
    )


def protocol_trials(trials: dict[int, int] | None, task: str, episodes: pd.DataFrame) -> dict[int, int] | None:
    """The part of a suite's `trials` a column spans: all of it, or one task given by id or name."""
    if not trials or not task:
        return trials
    ids = {int(t) for t in episodes["task_id"].unique()} or ({int(task)} if task.isdigit() else set())
    return {t: trials[t] for t in ids if t in trials} or None


def task_episodes(episodes: pd.DataFrame, task: str) -> pd.DataFrame:
    """The episodes of one task, given by id or by name."""
    return episodes[(episodes["task_id"].astype(str) == task) | (episodes["task_name"] == task)]
