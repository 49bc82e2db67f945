"""Ablation reports: variants of a model, which component each removes, per-task success, the change
against the full model, and a paired test of each variant against the full model.

An ablation is data (`registry/ablations.py`). The published rows print exactly as the paper prints them
(values and deltas of its averages); our rows come from the latest finished run of each variant's policy on the suite.

The paired test matches episodes by (task, initial state): both policies faced the same scene, so only
the episodes where exactly one of them succeeded say anything about a difference (exact McNemar). Where
`ablation --sequential` compared a variant with the full model, its recorded decision is shown beside it.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from qdepth_bench.core.hashing import file_hash
from qdepth_bench.core.lineage import lineage_summary, read_lineage
from qdepth_bench.eval.sequential import A_BETTER, B_BETTER, NO_DIFFERENCE
from qdepth_bench.registry.ablations import AblationSpec, Member, Variant
from qdepth_bench.registry.suites import suite_trials
from qdepth_bench.report.cells import Cell, cell_of, protocol_trials, task_episodes
from qdepth_bench.report.episodes import load_episodes
from qdepth_bench.report.stats import detectable_change, mcnemar_exact
from qdepth_bench.results.comparisons import comparisons_of
from qdepth_bench.results.store import Store


@dataclass(frozen=True)
class SequentialDecision:
    """A sequential comparison of a variant's training seed with the full model's same seed, as recorded by
    `ablation --sequential` (A is the full model, B the variant)."""

    status: str  # "running" or "decided"
    decision: str
    pairs_used: int
    pairs_run: int
    design: dict[str, Any]  # as recorded, with the family's correction

    @property
    def text(self) -> str:
        """'full better @11': the decision and the pairs it read; 'running (8 pairs run)' before one."""
        if self.status != "decided":
            return f"running ({self.pairs_run} pairs run)"
        said = {A_BETTER: "full better", B_BETTER: "variant better", NO_DIFFERENCE: "no difference"}
        return f"{said.get(self.decision, self.decision)} @{self.pairs_used}"

    def note(self) -> str:
        """The design the decision rests on, as a table note."""
        design, family = self.design, self.design["family"]
        return (
            f"sequential: each variant against the full model of the same training seed in paired rounds on the "
            f"same episodes, stopped at the first decision of the anytime-valid test ({design['alternative']}, "
            f"family alpha {family['alpha']:g} split over {family['comparisons']} comparisons by "
            f"{family['correction']}: {design['alpha']:.4g} each, at most {design['max_pairs']} pairs; '@n': the "
            "pairs the decision read); the paired test column reads those episodes as a fixed design, which the "
            "early stop biases: read this column there"
        )


@dataclass
class SeedResult:
    """One training seed of a variant: its average over the ablation's tasks, and its paired test against
    the full model's run of the same seed (when the full model has that seed)."""

    seed: int
    average: Cell
    p_value: float | None = None
    discordant: tuple[int, int] | None = None
    sequential: SequentialDecision | None = None


@dataclass
class AblationRow:
    variant: Variant
    cells: dict[str, Cell]  # ours: pooled over the variant's evaluated training seeds
    average: Cell
    #: average minus the full model's, in points; ours over the training seeds both have (the paired test's)
    delta: float | None = None
    p_value: float | None = None  # paired test against the full model, pooled over matched seeds (ours only)
    discordant: tuple[int, int] | None = None  # (only full succeeded, only variant succeeded)
    run_ids: tuple[str, ...] = ()
    seeds: list[SeedResult] = field(default_factory=list)
    planned_seeds: int = 1
    pairs: int = 0  # paired episodes behind the pooled test
    #: mean depth-token accuracy of its episodes scored by `run --depth-metrics` (None: none were)
    depth_accuracy: float | None = None

    @property
    def sequential_text(self) -> str:
        """The sequential decisions of its seeds ('' for none); each seed named when there are several."""
        texts = [(s.seed, s.sequential.text) for s in self.seeds if s.sequential is not None]
        if len(self.seeds) == 1:
            return texts[0][1] if texts else ""
        return "; ".join(f"seed {seed}: {text}" for seed, text in texts)

    @property
    def seed_spread(self) -> float | None:
        """Sample standard deviation of the seeds' averages, in points (None below two seeds)."""
        rates = [s.average.rate for s in self.seeds if s.average.rate is not None]
        return statistics.stdev(rates) if len(rates) > 1 else None


@dataclass
class AblationView:
    spec: AblationSpec
    source: str  # "published" or "ours"
    rows: list[AblationRow]
    #: its column labels: ours are the spec's tasks; published ones are the paper table's own columns, which
    #: may be another benchmark's (the tiny LIBERO ablation beside the paper's SIMPLER Table 6)
    columns: list[str] = field(default_factory=list)
    #: what the reader must know about how the rows' models were made (e.g. trained on different data)
    notes: list[str] = field(default_factory=list)

    @property
    def sequential(self) -> bool:
        """Whether any of its rows has a sequential comparison (the report then shows their column)."""
        return any(s.sequential is not None for r in self.rows for s in r.seeds)

    @property
    def has_depth(self) -> bool:
        """Whether some row's episodes were scored by `run --depth-metrics` (the depth-accuracy column)."""
        return any(r.depth_accuracy is not None for r in self.rows)

    @property
    def title(self) -> str:
        if self.source == "published":
            return f"{self.spec.title} — the paper's {self.spec.reference_table}, as published"
        return f"{self.spec.title} — our runs on {self.spec.suite} {self.spec.subset}"

    def detectable(self) -> list[str]:
        """For each set of paired episodes behind a test (the training seeds matched with the full model's):
        the smallest change against the full model's rate on those seeds that the exact McNemar test finds
        with 80% power at alpha 0.05."""
        full = next((r for r in self.rows if r.variant.policy == self.spec.full), None)
        if full is None:
            return []
        full_rates = seed_rates(full)
        designs = {
            (r.pairs, tuple(s.seed for s in r.seeds if s.p_value is not None and s.seed in full_rates))
            for r in self.rows
            if r.pairs
        }
        lines = []
        for pairs, seeds in sorted(designs):
            if not seeds:
                continue
            rate = statistics.fmean(full_rates[s] for s in seeds)
            low, high = detectable_change(rate / 100, pairs)
            drop = f"a drop to {100 * low:.1f}%" if low is not None else "no drop (even to 0%)"
            rise = f"a rise to {100 * high:.1f}%" if high is not None else "no rise"
            which = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
            lines.append(
                f"detectable with {pairs} paired episodes ({which}): {drop} or {rise} from the full model's "
                f"{rate:.1f}% (80% power, alpha 0.05, exact McNemar, outcomes independent between models)"
            )
        return lines


def _with_deltas(spec: AblationSpec, rows: list[AblationRow]) -> list[AblationRow]:
    full = next((r for r in rows if r.variant.policy == spec.full), None)
    for row in rows:
        if full is not None and full.average.rate is not None and row.average.rate is not None:
            row.delta = round(row.average.rate - full.average.rate, 6)
    return rows


def _with_matched_deltas(spec: AblationSpec, rows: list[AblationRow]) -> list[AblationRow]:
    """Our deltas: the variant's seeds against the full model's same seeds, the pairs its test uses, so a
    one-seed variant is not set against the full model's mean over other seeds as well."""
    full = next((r for r in rows if r.variant.policy == spec.full), None)
    if full is None:
        return rows
    full_rates = seed_rates(full)
    for row in rows:
        mine = {seed: rate for seed, rate in seed_rates(row).items() if seed in full_rates}
        if mine:
            row.delta = round(statistics.fmean(mine.values()) - statistics.fmean(full_rates[s] for s in mine), 6)
    return rows


def seed_rates(row: AblationRow) -> dict[int, float]:
    """Each evaluated training seed's average, in points."""
    return {s.seed: s.average.rate for s in row.seeds if s.average.rate is not None}


def published_ablation(spec: AblationSpec, references: pd.DataFrame) -> AblationView | None:
    """The paper's ablation rows with their printed averages and the deltas between those averages."""
    if not spec.reference_table:
        return None
    part = references[references["table_id"] == spec.reference_table]
    columns = [c for c in dict.fromkeys(part["column_label"]) if c != "Avg"]
    rows = []
    for variant in spec.variants:
        mine = part[part["method"] == variant.reference_method]
        if mine.empty:
            continue
        values = dict(zip(mine["column_label"], mine["success_rate"].astype(float), strict=True))
        cells = {label: Cell(values.get(label)) for label in columns}
        rows.append(AblationRow(variant, cells, Cell(values.get("Avg"))))
    return AblationView(spec, "published", _with_deltas(spec, rows), columns) if rows else None


def member_episodes(frame: pd.DataFrame, member: Member) -> pd.DataFrame:
    """The episodes of one trained model: the latest run of its checkpoint's weights under its policy name
    (or, without a checkpoint, of the policy name's latest identity)."""
    mine = frame[frame["policy_name"] == member.variant.policy]
    if member.weights is not None:
        if not member.weights.is_file():
            return mine.iloc[0:0]
        mine = mine[mine["policy_checkpoint_hash"] == file_hash(member.weights)]
    return _latest_identity(mine)


def measured_ablation(store: Store, spec: AblationSpec, seeds: int | None = None) -> AblationView | None:
    """Our rows: per variant, its training seeds' runs pooled, each seed's own average, and paired tests
    against the full model's run of the same seed, per seed and pooled over the matched seeds."""
    frame = load_episodes(store, None, None, stand_ins=bool(spec.protocol.get("stand_ins")))
    frame = frame[frame["suite"] == spec.suite]
    trials = suite_trials(spec.suite)
    members = spec.members(seeds)
    found = {(m.variant.policy, m.seed): member_episodes(frame, m) for m in members}
    full_runs = {seed: eps for (policy, seed), eps in found.items() if policy == spec.full and not eps.empty}
    rows = []
    for variant in spec.variants:
        runs = {seed: eps for (policy, seed), eps in found.items() if policy == variant.policy and not eps.empty}
        if not runs:
            continue
        pooled = pd.concat(list(runs.values()))
        per_seed = {seed: _columns(spec, trials, eps) for seed, eps in runs.items()}
        cells = {
            label: _worst_coverage(cell_of(task_episodes(pooled, task)), [c[label] for c in per_seed.values()])
            for label, task in spec.columns.items()
        }
        row = AblationRow(
            variant,
            cells,
            _subset_average(list(cells.values())),
            run_ids=tuple(sorted(pooled["run_id"].unique())),
            seeds=[SeedResult(seed, _subset_average(list(c.values()))) for seed, c in sorted(per_seed.items())],
            planned_seeds=sum(1 for m in members if m.variant.policy == variant.policy),
            depth_accuracy=_mean_or_none(pooled["depth_token_accuracy"]),
        )
        if variant.policy != spec.full:
            _paired(row, runs, full_runs)
            _sequential(store, spec, row, runs, full_runs)
        rows.append(row)
    if not rows:
        return None
    evaluated = [m for m in members if not found[(m.variant.policy, m.seed)].empty]
    decisions = [s.sequential for r in rows for s in r.seeds if s.sequential is not None]
    notes = [*dict.fromkeys(d.note() for d in decisions), *data_notes(evaluated), *lineage_notes(evaluated)]
    return AblationView(spec, "ours", _with_matched_deltas(spec, rows), list(spec.columns), notes)


def _sequential(
    store: Store,
    spec: AblationSpec,
    row: AblationRow,
    runs: dict[int, pd.DataFrame],
    full_runs: dict[int, pd.DataFrame],
) -> None:
    """Per seed: the latest sequential comparison this ablation recorded between the full model's run of that
    seed (A) and the variant's (B), if any."""
    for result in row.seeds:
        if result.seed not in full_runs:
            continue
        recorded = [
            comparison
            for run_a in full_runs[result.seed]["run_id"].unique()
            for run_b in runs[result.seed]["run_id"].unique()
            for comparison in comparisons_of(store, str(run_a), str(run_b))
            if json.loads(comparison["design"]).get("family", {}).get("ablation") == spec.id
        ]
        if recorded:
            last = max(recorded, key=lambda c: c["updated_at"])
            design = json.loads(last["design"])
            result.sequential = SequentialDecision(
                last["status"], last["decision"], last["pairs_used"], last["pairs_run"], design
            )


def _mean_or_none(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.astype(float).mean()) if len(values) else None


def data_notes(members: list[Member]) -> list[str]:
    """Whether the evaluated models were trained on one dataset, from the data fingerprint each checkpoint
    records (`datasets.episode.data_fingerprint`): a line when they differ or some are unknown."""
    hashes: dict[str, list[str]] = {}
    for member in members:
        config = None if member.checkpoint is None else member.checkpoint / "config.json"
        if config is None or not config.is_file():
            continue
        recorded = json.loads(config.read_text()).get("data_hash") or "unrecorded"
        hashes.setdefault(recorded, []).append(member.name)
    known = [h for h in hashes if h != "unrecorded"]
    notes = []
    if len(known) > 1:
        groups = "; ".join(f"data {h}: {', '.join(hashes[h])}" for h in known)
        notes.append(f"the models were trained on different data ({groups}): their differences mix data and method")
    if "unrecorded" in hashes and known:
        notes.append(
            f"no data fingerprint recorded with {', '.join(hashes['unrecorded'])} (trained before fingerprints "
            "were recorded): their data cannot be checked against the others'"
        )
    return notes


def lineage_notes(members: list[Member]) -> list[str]:
    """How each evaluated model was trained, stage by stage, as its checkpoint records it (`core.lineage`):
    a line per model whose checkpoint has a lineage (trained in stages or counted in epochs, or both)."""
    notes = []
    for member in members:
        lineage = None if member.checkpoint is None else read_lineage(member.checkpoint)
        if lineage:
            notes.append(f"{member.name} trained as {lineage_summary(lineage)}")
    return notes


def _columns(spec: AblationSpec, trials: dict[int, int] | None, episodes: pd.DataFrame) -> dict[str, Cell]:
    return {
        label: cell_of(part, protocol_trials(trials, task, part))
        for label, task in spec.columns.items()
        for part in [task_episodes(episodes, task)]
    }


def _worst_coverage(pooled: Cell, seeds: list[Cell]) -> Cell:
    """A pooled cell covers the protocol only as far as its least complete seed does."""
    worst = min(seeds, key=lambda c: ((c.tasks_covered or 0) / (c.tasks_total or 1), (c.trials_per_task or 0)))
    pooled.tasks_covered, pooled.tasks_total = worst.tasks_covered, worst.tasks_total
    pooled.trials_per_task, pooled.protocol_trials = worst.trials_per_task, worst.protocol_trials
    return pooled


def _paired(row: AblationRow, runs: dict[int, pd.DataFrame], full_runs: dict[int, pd.DataFrame]) -> None:
    """Per seed: the variant against the full model trained with the same seed. Pooled: the seeds' discordant
    pairs summed into one exact McNemar test (each seed a stratum; see docs/training.md)."""
    only_full = only_variant = 0
    for result in row.seeds:
        if result.seed not in full_runs:
            continue
        result.discordant, result.p_value, pairs = paired_test(full_runs[result.seed], runs[result.seed])
        only_full, only_variant, row.pairs = (
            only_full + result.discordant[0],
            only_variant + result.discordant[1],
            row.pairs + pairs,
        )
    if row.pairs:
        row.discordant, row.p_value = (only_full, only_variant), mcnemar_exact(only_full, only_variant)


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
        machines=max(c.machines for c in cells),
        repeats=max(c.repeats for c in cells),
    )


def _latest_identity(episodes: pd.DataFrame) -> pd.DataFrame:
    """One policy name may have several identities (checkpoints); keep the most recently run one."""
    if episodes.empty:
        return episodes
    latest = episodes.sort_values("run_started_at")["row_key"].iloc[-1]
    return episodes[episodes["row_key"] == latest]


def paired_test(full: pd.DataFrame, variant: pd.DataFrame) -> tuple[tuple[int, int], float, int]:
    """Exact McNemar over the episodes both ran (same task and initial state), errors left out; also the
    number of pairs."""
    keys = ["task_id", "episode_index", "repeat"]

    def scored(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["status"] != "error"][[*keys, "status"]]

    pairs = scored(full).merge(scored(variant), on=keys, suffixes=("_full", "_variant"))
    full_ok, variant_ok = pairs["status_full"] == "success", pairs["status_variant"] == "success"
    only_full, only_variant = int((full_ok & ~variant_ok).sum()), int((~full_ok & variant_ok).sum())
    return (only_full, only_variant), mcnemar_exact(only_full, only_variant), len(pairs)


def build_ablation(
    store: Store, spec: AblationSpec, reference: bool = True, seeds: int | None = None
) -> list[AblationView]:
    views = [
        published_ablation(spec, store.references_frame()) if reference else None,
        measured_ablation(store, spec, seeds),
    ]
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
            if view.source == "ours":
                record["seeds"] = " ".join(
                    f"{s.seed}:{'' if s.average.rate is None else round(s.average.rate, 4)}" for s in row.seeds
                )
                record["seed_sd"] = None if row.seed_spread is None else round(row.seed_spread, 4)
                record["seed_p_values"] = " ".join(
                    f"{s.seed}:{round(s.p_value, 6)}" for s in row.seeds if s.p_value is not None
                )
                record["sequential"] = row.sequential_text
                if view.has_depth:
                    record["depth_token_accuracy"] = row.depth_accuracy
            records.append(record)
    return records
