"""`qdepth-bench data generate`: demonstrations from a (scripted) policy, through the rollout engine.

Each demonstration starts from a fresh draw of the task's initial-state distribution, seeded apart from
the evaluation (LIBERO: the 50 official initial states are what evaluation uses; a draw that coincides with
one is refused. SIMPLER WidowX: the env's RNG picks one of the task's 24 layouts, the only ones it has, so
a demonstration may share its layout with an evaluation cell). Only successful episodes are kept. Workers
write each success as a one-demo part under `<out>/parts/`; a first round makes 1.5x the attempts needed,
a second tops every short task up to 3x, and the simulator's demonstration writer merges each task's parts
into its dataset format (LIBERO's HDF5 files: `sims/libero/demo_writer.py`; Bridge or Fractal RLDS:
`sims/simpler/demo_writer.py`). Attempts are recorded in `<out>/generation.sqlite`, so an interrupted
generation resumes where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import derive_seed
from qdepth_bench.core.policy import Policy
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.core.sim import Backend
from qdepth_bench.eval.engine import EngineOptions, execute
from qdepth_bench.eval.episode import EpisodeResult
from qdepth_bench.eval.plan import RunPlan, Selection, plan_run
from qdepth_bench.registry.base import import_target
from qdepth_bench.registry.sims import simulators
from qdepth_bench.results.store import Store


def demo_episodes(spec: SuiteSpec) -> Callable[[list[int], int, int], list[EpisodeSpec]]:
    """Episode specs of demonstration attempts: sampled initial states with seeds of their own."""

    def episodes(task_ids: list[int], n: int, run_seed: int) -> list[EpisodeSpec]:
        return [
            EpisodeSpec(
                spec.name,
                t,
                i,
                derive_seed(run_seed, "demo", spec.name, t, i),
                {"sample_seed": derive_seed(run_seed, "demo-init", spec.name, t, i)},
            )
            for t in task_ids
            for i in range(n)
        ]

    return episodes


def generate(
    spec: SuiteSpec,
    backend: Backend,
    policy: Policy,
    tasks: str | None,
    per_task: int,
    out: Path,
    workers: int,
    command: str,
    fmt: str | None = None,
    max_attempts_factor: int = 3,
    on_plan: Callable[[RunPlan], None] | None = None,
    on_episode: Callable[[EpisodeResult], None] | None = None,
) -> dict[int, int]:
    """Run attempts until each task has `per_task` successful demonstrations, at most `max_attempts_factor`
    x `per_task` attempts per task (a demonstrator that rarely succeeds on a task is not retried forever),
    written in dataset format `fmt` (None: the simulator's first); returns successes per task."""
    if per_task < 1:
        raise UserError(f"--episodes-per-task must be at least 1 (got {per_task}).")
    info = simulators().get(spec.backend)
    if not info.demo_writer:
        able = [name for name, i in simulators().items() if i.demo_writer]
        raise UserError(
            f"data generate needs a simulator that writes demonstration files ({', '.join(able)}); "
            f"{spec.name} runs on {spec.backend}."
        )
    fmt = fmt or info.demo_formats[0]
    if fmt not in info.demo_formats:
        raise UserError(
            f"{spec.name} demonstrations ({spec.backend}) are written as {', '.join(info.demo_formats)}, not {fmt}; "
            "choose one of those with --format."
        )
    task_ids = Selection.parse(tasks).task_ids(spec)
    writer = import_target(info.demo_writer)(out, backend, task_ids, fmt)
    store = Store(out / "generation.sqlite")
    cap = max_attempts_factor * per_task
    for attempts in sorted({min(math.ceil(per_task * 1.5) + 1, cap), cap}):
        short = [t for t in task_ids if writer.count(t) < per_task]
        if not short:
            break
        plan = plan_run(
            store,
            spec,
            backend,
            policy,
            Selection(tuple(short), attempts),
            command,
            purpose="demonstrations",
            episode_source=demo_episodes(spec),
        )
        if on_plan is not None:
            on_plan(plan)
        options = EngineOptions(
            workers=min(workers, max(len(plan.pending), 1)),
            sinks=(writer,),
            extra_cameras=("main", "wrist"),
            log_path=out / "logs" / f"{plan.run_id}.log",
        )
        execute(store, plan, options, on_episode)
    return {t: writer.merge(t, per_task) for t in task_ids}
