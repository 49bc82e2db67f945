"""`qdepth-bench data generate`: demonstrations from a (scripted) policy, through the rollout engine.

Each demonstration starts from a fresh draw of the task's initial-state distribution, seeded apart from
the evaluation (the 50 official initial states are what evaluation uses; a draw that coincides with one is
refused). Only successful episodes are kept. Workers write each success as a one-demo file under
`<out>/parts/`; a first round makes 1.5x the attempts needed, a second tops every short task up to 3x,
and the parts are merged into one LIBERO-format file per task, `<out>/<task>_demo.hdf5`. Attempts are
recorded in `<out>/generation.sqlite`, so an interrupted generation resumes where it stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..hashing import derive_seed
from ..policy import Policy
from ..rollout.engine import EngineOptions, execute
from ..rollout.episode import EpisodeResult
from ..rollout.runner import RunPlan, parse_tasks, plan_run
from ..store import Store
from ..suite import EpisodeSpec, SuiteSpec


def demo_episodes(spec: SuiteSpec) -> Callable[[list[int], int, int], list[EpisodeSpec]]:
    """Episode specs of demonstration attempts: sampled initial states with seeds of their own."""

    def episodes(task_ids: list[int], n: int, run_seed: int) -> list[EpisodeSpec]:
        return [EpisodeSpec(spec.name, t, i, derive_seed(run_seed, "demo", spec.name, t, i),
                            {"sample_seed": derive_seed(run_seed, "demo-init", spec.name, t, i)})
                for t in task_ids for i in range(n)]

    return episodes


def part_files(out: Path, task_id: int) -> list[Path]:
    return sorted((out / "parts" / f"task{task_id:02d}").glob("demo*.hdf5"))


def generate(spec: SuiteSpec, backend, policy: Policy, tasks: str | None, per_task: int, out: Path,  # type: ignore[no-untyped-def]
             workers: int, command: str, max_attempts_factor: int = 3,
             on_plan: Callable[[RunPlan], None] | None = None,
             on_episode: Callable[[EpisodeResult], None] | None = None) -> dict[int, int]:
    """Run attempts until each task has `per_task` successful demonstrations, at most `max_attempts_factor`
    x `per_task` attempts per task (a demonstrator that rarely succeeds on a task is not retried forever);
    returns successes per task."""
    if per_task < 1:
        raise UserError(f"--episodes-per-task must be at least 1 (got {per_task}).")
    task_ids = parse_tasks(tasks, spec.n_tasks, spec.name)
    store = Store(out / "generation.sqlite")
    cap = max_attempts_factor * per_task
    for attempts in sorted({min(math.ceil(per_task * 1.5) + 1, cap), cap}):
        short = [t for t in task_ids if len(part_files(out, t)) < per_task]
        if not short:
            break
        plan = plan_run(store, spec, backend, policy, ",".join(map(str, short)), attempts, command,
                        purpose="demonstrations", episode_source=demo_episodes(spec))
        if on_plan is not None:
            on_plan(plan)
        options = EngineOptions(workers=min(workers, max(len(plan.pending), 1)), demo_dir=out / "parts",
                                extra_cameras=("main", "wrist"), log_path=out / "logs" / f"{plan.run_id}.log")
        execute(store, plan, options, on_episode)
    counts = {}
    for t in task_ids:
        parts = part_files(out, t)[:per_task]
        counts[t] = len(parts)
        if parts:
            merge_parts(parts, out / f"{Path(backend.bddl_file_of(t)).stem}_demo.hdf5")
    return counts


def merge_parts(parts: list[Path], target: Path) -> Path:
    """One LIBERO-format file from one-demo files (demos renumbered in order, attributes from the first)."""
    import h5py

    from .libero_hdf5 import write_episodes

    demos = []
    with h5py.File(parts[0], "r") as first:
        attrs = dict(first["data"].attrs)
    for part in parts:
        with h5py.File(part, "r") as f:
            group = f["data"]["demo_0"]
            demo = {"actions": group["actions"][()], "states": group["states"][()]}
            demo.update({f"obs/{k}": np.asarray(v[()]) for k, v in group["obs"].items()})
            demos.append(demo)
    instruction = json.loads(attrs["problem_info"])["language_instruction"]
    return write_episodes(target, demos, instruction, str(attrs["bddl_file_name"]), json.loads(attrs["env_args"]))
