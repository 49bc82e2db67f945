"""Ablation reports: variants of a model, which component each removes, per-task success, the change
against the full model, and a paired test of each variant against the full model.

An ablation is data (`registry/ablations.py`). The published rows print exactly as the paper prints them
(values and deltas of its averages); our rows come from the latest finished run of each variant's policy on the suite.

The paired test matches episodes by (task, initial state): both policies faced the same scene, so only
the episodes where exactly one of them succeeded say anything about a difference (exact McNemar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from qdepth_bench.registry.ablations import AblationSpec, Variant
from qdepth_bench.registry.suites import suite_trials
from qdepth_bench.report.cells import Cell, cell_of, protocol_trials, task_episodes
from qdepth_bench.report.episodes import load_episodes
from qdepth_bench.report.stats import mcnemar_exact
from qdepth_bench.results.store import Store


@dataclass
class AblationRow:
    variant: Variant
    cells: dict[str, Cell]
    average: Cell
    delta: float | None = None  # average minus the full model's, in points
    p_value: float | None = None  # paired test against the full model (ours only)
    discordant: tuple[int, int] | None = None  # (only full succeeded, only variant succeeded)
    run_ids: tuple[str, ...] = ()


@dataclass
class AblationView:
    spec: AblationSpec
    source: str  # "published" or "ours"
    rows: list[AblationRow]

    @property
    def title(self) -> str:
        if self.source == "published":
            return f"{self.spec.title} — as published"
        return f"{self.spec.title} — our runs on {self.spec.suite} {self.spec.subset}"


def _with_deltas(spec: AblationSpec, rows: list[AblationRow]) -> list[AblationRow]:
    full = next((r for r in rows if r.variant.policy == spec.full), None)
    for row in rows:
        if full is not None and full.average.rate is not None and row.average.rate is not None:
            row.delta = round(row.average.rate - full.average.rate, 6)
    return rows


def published_ablation(spec: AblationSpec, references: pd.DataFrame) -> AblationView | None:
    """The paper's ablation rows with their printed averages and the deltas between those averages."""
    if not spec.reference_table:
        return None
    part = references[references["table_id"] == spec.reference_table]
    rows = []
    for variant in spec.variants:
        mine = part[part["method"] == variant.reference_method]
        if mine.empty:
            continue
        values = dict(zip(mine["column_label"], mine["success_rate"].astype(float), strict=True))
        cells = {label: Cell(values.get(label)) for label in spec.columns}
        rows.append(AblationRow(variant, cells, Cell(values.get("Avg"))))
    return AblationView(spec, "published", _with_deltas(spec, rows)) if rows else None


def measured_ablation(store: Store, spec: AblationSpec) -> AblationView | None:
    """Our rows: the latest finished run of each variant's policy on the suite, with paired tests."""
    frame = load_episodes(store, None, None)
    frame = frame[frame["suite"] == spec.suite]
    by_policy = {v.policy: _latest_identity(frame[frame["policy_name"] == v.policy]) for v in spec.variants}
    full_episodes = by_policy[spec.full]
    trials = suite_trials(spec.suite)
    rows = []
    for variant in spec.variants:
        episodes = by_policy[variant.policy]
        if episodes.empty:
            continue
        cells = {
            label: cell_of(part, protocol_trials(trials, task, part))
            for label, task in spec.columns.items()
            for part in [task_episodes(episodes, task)]
        }
        average = _subset_average(list(cells.values()))
        row = AblationRow(variant, cells, average, run_ids=tuple(sorted(episodes["run_id"].unique())))
        if variant.policy != spec.full and not full_episodes.empty:
            row.discordant, row.p_value = paired_test(full_episodes, episodes)
        rows.append(row)
    return AblationView(spec, "ours", _with_deltas(spec, rows)) if rows else None


def _subset_average(cells: list[Cell]) -> Cell:
    """The mean over the ablation's declared tasks (complete for its own spec), carrying the fewest trials
    of any of them, so an ablation run short of the protocol's trials still says so."""
    rates = [c.rate for c in cells if c.rate is not None]
    if not cells or len(rates) < len(cells):
        return Cell(None, sum(c.n for c in cells), sum(c.successes for c in cells), sum(c.errors for c in cells))
    short = min(cells, key=lambda c: (c.trials_per_task or 0) / (c.protocol_trials or 1))
    return Cell(
        sum(rates) / len(rates),
        sum(c.n for c in cells),
        sum(c.successes for c in cells),
        sum(c.errors for c in cells),
        tasks_covered=len(cells),
        tasks_total=len(cells),
        trials_per_task=short.trials_per_task,
        protocol_trials=short.protocol_trials,
        unfinished=any(c.unfinished for c in cells),
    )


def _latest_identity(episodes: pd.DataFrame) -> pd.DataFrame:
    """One policy name may have several identities (checkpoints); keep the most recently run one."""
    if episodes.empty:
        return episodes
    latest = episodes.sort_values("run_started_at")["row_key"].iloc[-1]
    return episodes[episodes["row_key"] == latest]


def paired_test(full: pd.DataFrame, variant: pd.DataFrame) -> tuple[tuple[int, int], float]:
    """Exact McNemar over the episodes both ran (same task and initial state), errors left out."""
    keys = ["task_id", "episode_index"]

    def scored(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["status"] != "error"][[*keys, "status"]]

    pairs = scored(full).merge(scored(variant), on=keys, suffixes=("_full", "_variant"))
    full_ok, variant_ok = pairs["status_full"] == "success", pairs["status_variant"] == "success"
    only_full, only_variant = int((full_ok & ~variant_ok).sum()), int((~full_ok & variant_ok).sum())
    return (only_full, only_variant), mcnemar_exact(only_full, only_variant)


def missing_variants(store: Store, spec: AblationSpec) -> list[Variant]:
    """Variants with no recorded episode on the ablation's suite."""
    frame = store.episodes_frame()
    have = set(frame.loc[frame["suite"] == spec.suite, "policy_name"])
    return [v for v in spec.variants if v.policy not in have]


def build_ablation(store: Store, spec: AblationSpec, reference: bool = True) -> list[AblationView]:
    views = [published_ablation(spec, store.references_frame()) if reference else None, measured_ablation(store, spec)]
    return [v for v in views if v is not None]


def ablation_records(views: list[AblationView]) -> list[dict[str, Any]]:
    """One flat record per (view, variant): marks, per-column rates, average, delta, test."""
    records = []
    for view in views:
        for row in view.rows:
            record: dict[str, Any] = {
                "ablation": view.spec.id,
                "source": view.source,
                "variant": row.variant.label,
                "policy": row.variant.policy,
            }
            for component in view.spec.components:
                record[component] = component not in row.variant.removes
            for label, cell in row.cells.items():
                record[label] = None if cell.rate is None else round(cell.rate, 4)
                if view.source == "ours":
                    record[f"{label} n"] = cell.n
            record["Avg"] = None if row.average.rate is None else round(row.average.rate, 4)
            record["delta"] = row.delta
            record["p_value"] = None if row.p_value is None else round(row.p_value, 6)
            record["discordant"] = "" if row.discordant is None else f"{row.discordant[0]}/{row.discordant[1]}"
            records.append(record)
    return records
