"""The robustness report: success under each perturbation level, and its drop against the unperturbed twins.

A perturbed run's twin is the unperturbed run of the same policy identity on the same suite whose protocol
is the perturbed one without its `perturbation` entry (`core.perturbation`). Its episodes have the same task,
initial state index, repeat and seed, so each perturbed episode is compared with the episode it would have
been: the drop is over those pairs, and the exact McNemar test (`report.ablation.paired_test`) counts the
pairs where exactly one of the two succeeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from qdepth_bench.core.hashing import stable_hash
from qdepth_bench.core.perturbation import Perturbation, perturbation_of, unperturbed_record
from qdepth_bench.core.protocol import SuiteSpec
from qdepth_bench.report.ablation import paired_test
from qdepth_bench.report.cells import Cell, cell_of
from qdepth_bench.results.store import Store


@dataclass
class RobustnessRow:
    policy: str
    perturbation: Perturbation
    run_id: str
    #: the perturbed episodes' success rate with its Wilson interval
    cell: Cell
    #: the unperturbed twin run (None: not recorded; no drop or test then)
    twin_run_id: str | None = None
    #: the twins' success rate over the paired episodes, and the perturbed one over the same pairs
    twin_rate: float | None = None
    paired_rate: float | None = None
    pairs: int = 0
    #: (twin-only successes, perturbed-only successes) and the exact McNemar p-value
    discordant: tuple[int, int] | None = None
    p_value: float | None = None
    #: paired episodes whose seeds differ (0 unless the twins were recorded under another seeding)
    seed_mismatches: int = 0

    @property
    def drop(self) -> float | None:
        """Percentage points lost against the twins on the paired episodes (negative: a gain)."""
        if self.twin_rate is None or self.paired_rate is None:
            return None
        return self.twin_rate - self.paired_rate


@dataclass
class RobustnessView:
    suite: str
    rows: list[RobustnessRow]
    #: per policy: the twins' success rate over every twin episode of the tasks the perturbed runs cover
    baselines: dict[str, Cell] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"robustness on {self.suite}: success under each perturbation, and the drop against its twins"


def _identity(run: dict[str, Any]) -> tuple[str, str, str, str]:
    return (run["policy_name"], run["policy_config_hash"], run["policy_checkpoint_hash"], run["setting"])


def _labels(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], str]:
    """Policy names, with the config and checkpoint hashes where one name has several identities."""
    identities = {_identity(r) for r in runs}
    names = [i[0] for i in identities]
    return {i: i[0] if names.count(i[0]) == 1 else f"{i[0]} [{(i[1] + i[2])[:6]}]" for i in identities}


def build_robustness(
    store: Store, base: SuiteSpec, specs: list[SuiteSpec], policies: list[str] | None = None
) -> list[RobustnessView]:
    """The report of `specs` (perturbed copies of `base`) over every policy recorded on them (or `policies`);
    [] when none of them has a recorded run."""
    wanted = [perturbation_of(s.protocol) for s in specs]
    records = [p.record() for p in wanted if p is not None]
    runs = [r for r in store.runs(base.name) if not policies or r["policy_name"] in policies]
    protocols = {r["run_id"]: json.loads(r["protocol"]) for r in runs}
    twins: dict[tuple[Any, ...], dict[str, Any]] = {}
    perturbed: list[tuple[dict[str, Any], Perturbation]] = []
    for run in runs:  # oldest first: the latest twin of an identity wins
        perturbation = perturbation_of(protocols[run["run_id"]])
        if perturbation is None:
            twins[(*_identity(run), run["protocol_hash"])] = run
        elif perturbation.record() in records:
            perturbed.append((run, perturbation))
    if not perturbed:
        return []
    involved = [r for r, _ in perturbed] + list(twins.values())
    frame = store.episodes_frame([r["run_id"] for r in involved])
    labels = _labels([r for r, _ in perturbed])
    view = RobustnessView(base.name, [])
    order = {stable_hash(rec): i for i, rec in enumerate(records)}
    for run, perturbation in sorted(
        perturbed, key=lambda rp: (labels[_identity(rp[0])], order[stable_hash(rp[1].record())])
    ):
        episodes = frame[frame["run_id"] == run["run_id"]]
        row = RobustnessRow(labels[_identity(run)], perturbation, run["run_id"], cell_of(episodes))
        twin = twins.get((*_identity(run), stable_hash(unperturbed_record(protocols[run["run_id"]]))))
        if twin is not None:
            _pair(row, frame[frame["run_id"] == twin["run_id"]], episodes)
            row.twin_run_id = twin["run_id"]
            tasks = set(episodes["task_id"])
            twin_episodes = frame[(frame["run_id"] == twin["run_id"]) & frame["task_id"].isin(tasks)]
            view.baselines.setdefault(row.policy, cell_of(twin_episodes))
        view.rows.append(row)
    missing = sorted({r.policy for r in view.rows if r.twin_run_id is None})
    if missing:
        view.notes.append(
            f"no unperturbed twin run recorded for {', '.join(missing)}: run the same policy on {base.name} "
            "without --perturb (or `robustness --run`) for the drop and the paired test"
        )
    if any(r.seed_mismatches for r in view.rows):
        view.notes.append("some paired episodes have different seeds: their twins were recorded under another seeding")
    return [view]


def _pair(row: RobustnessRow, twin: pd.DataFrame, perturbed: pd.DataFrame) -> None:
    """The paired drop and test of one perturbed run against its twin run."""
    keys = ["task_id", "episode_index", "repeat"]
    scored_twin, scored = twin[twin["status"] != "error"], perturbed[perturbed["status"] != "error"]
    pairs = scored_twin.merge(scored, on=keys, suffixes=("_twin", "_perturbed"))
    discordant, p_value, row.pairs = paired_test(scored_twin, scored)
    row.seed_mismatches = int((pairs["seed_twin"] != pairs["seed_perturbed"]).sum())
    if row.pairs:  # no pairs, no test
        row.discordant, row.p_value = discordant, p_value
        row.twin_rate = 100.0 * float((pairs["status_twin"] == "success").mean())
        row.paired_rate = 100.0 * float((pairs["status_perturbed"] == "success").mean())


def robustness_records(view: RobustnessView) -> list[dict[str, Any]]:
    """One flat record per row (the CSV form)."""
    return [
        {
            "suite": view.suite,
            "policy": r.policy,
            "dimension": r.perturbation.dimension,
            "level": r.perturbation.level,
            "strength": r.perturbation.strength,
            "unit": r.perturbation.unit,
            "seed": r.perturbation.seed,
            "success_rate": r.cell.rate,
            "ci_low": r.cell.ci_low,
            "ci_high": r.cell.ci_high,
            "n": r.cell.n,
            "errors": r.cell.errors,
            "twin_rate": r.twin_rate,
            "paired_rate": r.paired_rate,
            "drop_pp": r.drop,
            "pairs": r.pairs,
            "twin_only_successes": r.discordant[0] if r.discordant else None,
            "perturbed_only_successes": r.discordant[1] if r.discordant else None,
            "mcnemar_p": r.p_value,
            "run_id": r.run_id,
            "twin_run_id": r.twin_run_id,
        }
        for r in view.rows
    ]


def robustness_figure(views: list[RobustnessView], out: Path) -> Path:
    """Success against perturbation strength, one panel per dimension and one line per policy; the point at
    strength 0 is the twins' rate, the bars 95% Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qdepth_bench.report.figures import save_png

    rows = [r for v in views for r in v.rows]
    baselines = {k: c for v in views for k, c in v.baselines.items()}
    dimensions = list(dict.fromkeys(r.perturbation.dimension for r in rows))
    fig, axes = plt.subplots(1, len(dimensions), figsize=(4.2 * len(dimensions), 3.6), squeeze=False)
    for ax, dimension in zip(axes[0], dimensions, strict=True):
        mine = [r for r in rows if r.perturbation.dimension == dimension]
        for policy in dict.fromkeys(r.policy for r in mine):
            points = sorted((r.perturbation.strength, r.cell) for r in mine if r.policy == policy)
            if policy in baselines:
                points.insert(0, (0.0, baselines[policy]))
            cells = [(x, c) for x, c in points if c.rate is not None]
            xs = [x for x, _ in cells]
            rates = [c.rate or 0.0 for _, c in cells]
            # Wilson bounds at 0% come back a rounding error away from the rate: never a negative bar
            low = [max(0.0, (c.rate or 0.0) - (c.ci_low if c.ci_low is not None else c.rate or 0.0)) for _, c in cells]
            high = [
                max(0.0, (c.ci_high if c.ci_high is not None else c.rate or 0.0) - (c.rate or 0.0)) for _, c in cells
            ]
            ax.errorbar(xs, rates, yerr=[low, high], marker="o", capsize=3, label=policy)
        ax.set_title(dimension)
        ax.set_xlabel(mine[0].perturbation.unit or "strength")
        ax.set_ylim(0, 100)
        ax.set_ylabel("success % (95% Wilson)")
        ax.legend(fontsize=8)
    return save_png(fig, out)
