"""The evaluation entry point every command shares (`run`, `ablation --run`, and any command that evaluates a
policy): plan the policy on each suite, then execute the plans one after another on one `Engine`
(`execute_plan`, which the paired rounds of `eval.sequential_compare` use as well).

What the user sees (header lines, progress bars, where the time went) is the caller's: it passes a
`RunObserver`, so this layer prints nothing and any front end can drive it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from qdepth_bench.core.policy import Policy
from qdepth_bench.core.protocol import SuiteSpec
from qdepth_bench.eval.depth_metrics import check_depth_policy
from qdepth_bench.eval.engine import Engine, EngineOptions, EngineStats
from qdepth_bench.eval.episode import EpisodeResult
from qdepth_bench.eval.plan import RunPlan, Selection, plan_run
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.results.store import Store


class RunObserver(Protocol):
    """Told what an evaluation does, plan by plan."""

    def planned(self, plan: RunPlan, options: EngineOptions, asked_workers: int) -> None:
        """A plan is made and about to run on `options.workers` workers (`asked_workers`: as asked for)."""

    def running(self, plan: RunPlan) -> AbstractContextManager[Callable[[EpisodeResult], None]]:
        """Around the plan's execution: what to call with each finished episode (e.g. a progress bar)."""

    def ran(self, plan: RunPlan, stats: EngineStats) -> None:
        """The plan's execution is over (not called when it stopped with an exception)."""


def evaluate(
    store: Store,
    specs: Sequence[SuiteSpec],
    policy: Policy,
    selection: Selection,
    options: EngineOptions,
    command: str,
    observer: RunObserver | None = None,
    engine: Engine | None = None,
) -> list[RunPlan]:
    """Plan and execute `policy` on each suite of `specs` (each adapted to what the policy needs); the plans.

    `command` is recorded with each run. `engine`: one whose workers were started early
    (`Engine.start_early`), used by the first plan with episodes to run; without one, each plan gets workers
    of its own. Each plan is executed by `execute_plan`."""
    if options.depth_metrics:
        check_depth_policy(policy, options.depth_codec)
    plans = []
    with nullcontext(engine) if engine is not None else Engine() as owner:
        for spec in (s.for_policy(policy.requirements) for s in specs):
            plan = plan_run(
                store, spec, make_backend(spec), policy, selection, command, depth_metrics=options.depth_metrics
            )
            plans.append(plan)
            execute_plan(store, plan, options, owner, observer)
    return plans


def execute_plan(
    store: Store, plan: RunPlan, options: EngineOptions, engine: Engine, observer: RunObserver | None = None
) -> None:
    """Execute one plan on `engine`, shown through `observer`: on at most as many workers as it has pending
    episodes, logging to `logs/<database>-<run id>.log` beside the database. Shared by `evaluate` and the
    paired rounds of `eval.sequential_compare`, so both show and log a plan alike."""
    run_options = dataclasses.replace(
        options,
        workers=min(options.workers, max(len(plan.pending), 1)),
        # named by database and run: several databases in one folder keep their logs apart
        log_path=store.path.parent / "logs" / f"{store.path.stem}-{plan.run_id}.log",
    )
    if observer is None:
        engine.execute(store, plan, run_options)
        return
    observer.planned(plan, run_options, options.workers)
    with observer.running(plan) as on_episode:
        stats = engine.execute(store, plan, run_options, on_episode)
    observer.ran(plan, stats)
