"""Two policies on the same episodes, in paired rounds, to a decision: the loop behind `compare` and
`ablation --sequential`.

Each round runs both policies on the next episodes of an order fixed before the first one (tasks
interleaved, then repeats), through the same engine as `run`, into each policy's ordinary run (so tables,
verify and resume treat them like any run). Sequential comparisons read the pairs in that order after every
round with the anytime-valid test of `eval.sequential` and stop at its first decision; fixed ones run every
pair up to the design's maximum.

The design (alpha, maximum pairs, alternative, and for one of several comparisons the correction that split
the family's alpha) is recorded in the `paired_comparisons` table the first time; calling again with the
same design resumes the comparison mid-test, and another design on the same two runs is refused, since a
design chosen after seeing outcomes would void its error guarantee. This layer prints nothing: the caller's
`ComparisonObserver` shows what happens.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import stable_hash
from qdepth_bench.core.policy import Policy
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.eval.engine import Engine, EngineOptions
from qdepth_bench.eval.evaluate import RunObserver, execute_plan
from qdepth_bench.eval.plan import MAX_ATTEMPTS, Selection, plan_run
from qdepth_bench.eval.sequential import SequentialDesign, SequentialResult, decide
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.results.comparisons import recorded_comparison, save_comparison
from qdepth_bench.results.store import Store


@dataclass(frozen=True)
class Side:
    """One policy of the comparison: its policy object and the suite as it runs it."""

    policy: Policy
    spec: SuiteSpec


@dataclass(frozen=True)
class Comparison:
    """A comparison as planned: its two runs, its id, and the order its pairs are run and read in."""

    comparison_id: str
    sides: tuple[Side, Side]
    runs: tuple[str, str]
    tasks: str  # as recorded: "0,3", or "all"
    design: SequentialDesign
    sequential: bool
    schedule: list[EpisodeSpec]


@dataclass(frozen=True)
class ComparisonOutcome:
    """Where a comparison stands after `run_comparison`: the test on the pairs read, those pairs, and the pairs
    lost to errors."""

    comparison: Comparison
    result: SequentialResult
    pairs: list[tuple[bool, bool]]
    lost: int

    @property
    def used(self) -> list[tuple[bool, bool]]:
        """The pairs the answer rests on: up to the decision when sequential, all of them when fixed."""
        return self.pairs[: self.result.pairs_used] if self.comparison.sequential else self.pairs


class ComparisonObserver(RunObserver, Protocol):
    """Told what a comparison does: set up, each round, and each plan of a round (as `RunObserver`)."""

    def compared(self, comparison: Comparison) -> None:
        """The comparison is planned (or found recorded) and about to run its rounds."""

    def round(self, first: int, last: int, total: int) -> None:
        """A round of pairs `first`..`last` (1-based) of at most `total` starts."""

    def decided(self, outcome: ComparisonOutcome) -> None:
        """The comparison is over: decided, or every pair of a fixed design read."""


def refuse_undecidable(design: SequentialDesign) -> None:
    """A maximum below the fewest pairs that could ever name a policy can only answer "no difference"."""
    if design.fewest_pairs() > design.max_pairs:
        raise UserError(
            f"--max-pairs {design.max_pairs} is too few for this test to ever name a policy: it needs at least "
            f"{design.fewest_pairs()} pairs at alpha {design.alpha:g} ({design.alternative}); raise --max-pairs."
        )


def _schedule(episodes: list[EpisodeSpec], max_pairs: int) -> list[EpisodeSpec]:
    """The order pairs are run and read in, fixed up front: tasks interleaved (episode 0 of every task, then
    episode 1, ...), repeats after all first runs, so any prefix spreads over the tasks."""
    ordered = sorted(episodes, key=lambda e: (e.repeat, e.episode_index, e.task_id))
    return ordered[:max_pairs]


def _settled(state: tuple[str, int] | None) -> bool:
    """An episode that will not be run again: scored, or an error with no attempts left (a transient error
    reads as 'transient' and is run again)."""
    if state is None:
        return False
    status, attempts = state
    return status in ("success", "failure") or (status == "error" and attempts >= MAX_ATTEMPTS)


def _pairs(store: Store, runs: tuple[str, str], order: list[EpisodeSpec]) -> tuple[list[tuple[bool, bool]], int, int]:
    """The scored pairs in schedule order up to the first unsettled place; the places read and those lost to
    errors."""
    states = [store.episode_states(run) for run in runs]
    pairs, read, lost = [], 0, 0
    for episode in order:
        both = [s.get(episode.place) for s in states]
        if not all(_settled(state) for state in both):
            break
        read += 1
        a, b = (state[0] for state in both if state is not None)
        if "error" in (a, b):
            lost += 1
            continue
        pairs.append((a == "success", b == "success"))
    return pairs, read, lost


def design_text(design: SequentialDesign, family: dict[str, Any] | None) -> str:
    """The design as recorded: the test's parameters, and the family's correction when there is one."""
    return json.dumps({**design.record(), **({"family": family} if family else {})}, sort_keys=True)


def _plan(
    store: Store,
    sides: tuple[Side, Side],
    selection: Selection,
    design: SequentialDesign,
    sequential: bool,
    command: str,
) -> tuple[Comparison, Selection]:
    """The two runs and the pairs' order, with the suite's episodes repeated as often as the maximum needs;
    refused when a repeat could copy a policy's outcomes or both sides are one policy."""
    first = sides[0]
    once = plan_run(store, first.spec, make_backend(first.spec), first.policy, selection, command)
    repeats = math.ceil(design.max_pairs / len(once.episodes))
    selection = dataclasses.replace(selection, repeats=repeats)
    fixed_outcomes = [s.policy.name for s in sides if not s.policy.uses_seed]
    if repeats > 1 and fixed_outcomes:
        raise UserError(
            f"--max-pairs {design.max_pairs} needs repeats of the {len(once.episodes)} episodes of these tasks, and "
            f"policy '{fixed_outcomes[0]}' does not use the episode seed: its repeats could copy its outcomes, and "
            f"the test would count one pair twice; lower --max-pairs to {len(once.episodes)} or add --tasks."
        )
    plans = [plan_run(store, s.spec, make_backend(s.spec), s.policy, selection, command) for s in sides]
    runs = (plans[0].run_id, plans[1].run_id)
    if runs[0] == runs[1]:
        raise UserError("A and B are the same policy with the same options: give two different policies.")
    tasks = ",".join(map(str, selection.tasks)) if selection.tasks is not None else "all"
    comparison_id = stable_hash({"runs": runs, "tasks": tasks}, 12)
    order = _schedule(plans[0].episodes, design.max_pairs)
    return Comparison(comparison_id, sides, runs, tasks, design, sequential, order), selection


def run_comparison(
    store: Store,
    sides: tuple[Side, Side],
    selection: Selection,
    design: SequentialDesign,
    options: EngineOptions,
    command: str,
    observer: ComparisonObserver | None = None,
    *,
    sequential: bool = True,
    round_size: int = 1,
    family: dict[str, Any] | None = None,
) -> ComparisonOutcome:
    """Run (or resume) the comparison of `sides` on the episodes of `selection` to its end: the first decision
    when `sequential`, every pair up to `design.max_pairs` when not; rounds of `round_size` pairs.

    `family` is recorded with the design when this comparison is one of several sharing an error rate (e.g.
    `{"ablation": "table6", "alpha": 0.05, "comparisons": 4, "correction": "Bonferroni"}`, the design's own
    alpha then being the family's share). Episodes of the last round after the deciding pair are recorded but
    not read. Ctrl-C propagates (`KeyboardInterrupt`) with every finished episode saved."""
    if sequential:
        refuse_undecidable(design)
    comparison, selection = _plan(store, sides, selection, design, sequential, command)
    runs, order = comparison.runs, comparison.schedule
    recorded = recorded_comparison(store, comparison.comparison_id)
    fixed = {"sequential": int(sequential), "design": design_text(design, family)}
    if recorded is not None and (recorded["sequential"], recorded["design"]) != (fixed["sequential"], fixed["design"]):
        raise UserError(
            f"comparison {comparison.comparison_id} of runs {runs[0]} and {runs[1]} was started with "
            f"{'--sequential, ' if recorded['sequential'] else ''}design {recorded['design']}; run it with the same "
            "options (a design chosen after seeing outcomes loses its error guarantee), or compare on other --tasks."
        )
    row = recorded or {
        "comparison_id": comparison.comparison_id,
        "run_a": runs[0],
        "run_b": runs[1],
        "suite": sides[0].spec.name,
        "tasks": comparison.tasks,
        **fixed,
        "command": command,
        "created_at": time.time(),
    }
    if observer is not None:
        observer.compared(comparison)
    engine = Engine()  # each round's pool is closed with its run
    while True:
        pairs, read, lost = _pairs(store, runs, order)
        exhausted = read == len(order)
        # once every place is read, the test is closed at the pairs it has (fewer when errors lost some)
        reading = design if not exhausted else dataclasses.replace(design, max_pairs=max(len(pairs), 1))
        result = decide(pairs, reading)
        done = exhausted or (sequential and result.decided)
        row.update(
            status="decided" if done else "running",
            decision=result.decision if sequential else "",
            pairs_used=result.pairs_used if sequential else len(pairs),
            pairs_run=read,
            pairs_lost=lost,
            result=json.dumps(result.record(), sort_keys=True),
        )
        save_comparison(store, row)
        if done:
            outcome = ComparisonOutcome(comparison, result, pairs, lost)
            if observer is not None:
                observer.decided(outcome)
            return outcome
        batch = order[read : read + round_size]
        if observer is not None:
            observer.round(read + 1, read + len(batch), len(order))
        places = {e.place for e in batch}
        for side in sides:
            plan = plan_run(store, side.spec, make_backend(side.spec), side.policy, selection, command, only=places)
            if plan.pending:
                execute_plan(store, plan, options, engine, observer)
        if _pairs(store, runs, order)[1] == read:
            raise UserError(
                f"the round of pairs {read + 1}-{read + len(batch)} recorded nothing new (errors that may pass by "
                "themselves); run the same command again to retry them."
            )
