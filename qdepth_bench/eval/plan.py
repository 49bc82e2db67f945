"""Plan a run: its identity in the store, and which of the requested episodes still need running.

The run key is the policy identity + suite + protocol hash + seed; the store's run id is its hash, so
repeating a command resumes it: recorded successes and failures are skipped, errors are run again until
an episode has had `MAX_ATTEMPTS` attempts. `engine.execute` runs the plan.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.fingerprint import differences, machine_fingerprint, machine_hash
from qdepth_bench.core.policy import Policy
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec, episode_seed
from qdepth_bench.core.provenance import package_versions
from qdepth_bench.core.sim import Backend
from qdepth_bench.results.rows import run_key, run_row
from qdepth_bench.results.store import Store

MAX_ATTEMPTS = 3


@dataclass
class RunPlan:
    run_id: str
    spec: SuiteSpec
    backend: Backend
    policy: Policy
    record: dict
    episodes: list[EpisodeSpec]
    pending: list[EpisodeSpec]
    attempts: dict[tuple[int, int, int], int] = field(default_factory=dict)
    #: this machine (`core.fingerprint`), recorded with the session that runs the plan
    fingerprint: dict[str, Any] = field(default_factory=dict)
    #: what the user should hear before the run starts (e.g. that it now mixes machines)
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Selection:
    """Which episodes of each suite a run asks for (`--tasks`, `--episodes`, `--repeats`), parsed and checked
    once (`parse`) before anything is created or loaded."""

    #: task ids as given (None: every task of the suite)
    tasks: tuple[int, ...] | None = None
    #: episodes per task (None: the protocol's trials)
    episodes: int | None = None
    #: how many times each episode runs, each time with its own seed
    repeats: int = 1
    #: run again, with their attempts afresh, the episodes that ended in errors after every attempt
    #: (`--retry-errors`: the cause is fixed; recorded outcomes stay as they are)
    retry_errors: bool = False

    @classmethod
    def parse(
        cls, tasks: str | None, episodes: int | None = None, repeats: int = 1, retry_errors: bool = False
    ) -> Selection:
        """'0,2,5-7' -> tasks (0, 2, 5, 6, 7); a malformed list or a count below 1 is refused in one line."""
        if repeats < 1:
            raise UserError(f"--repeats must be at least 1 (got {repeats}).")
        if episodes is not None and episodes < 1:
            raise UserError(f"--episodes must be at least 1 (got {episodes}).")
        if tasks is None or not tasks.strip():
            return cls(None, episodes, repeats, retry_errors)
        ids: list[int] = []
        for part in tasks.split(","):
            part = part.strip()
            try:
                if "-" in part:
                    lo, hi = (int(x) for x in part.split("-", 1))
                    if lo > hi:
                        raise UserError(
                            f"--tasks '{tasks}': the range {part} runs backwards; write it low-high ({hi}-{lo})."
                        )
                    ids.extend(range(lo, hi + 1))
                else:
                    ids.append(int(part))
            except ValueError:
                raise UserError(f"--tasks '{tasks}' is not a list of task ids such as 0,1 or 0-4.") from None
        return cls(tuple(ids), episodes, repeats, retry_errors)

    def task_ids(self, spec: SuiteSpec) -> list[int]:
        """The suite's tasks this selection names, sorted; an id the suite does not have names its range."""
        if self.tasks is None:
            return list(range(spec.n_tasks))
        bad = [t for t in self.tasks if not 0 <= t < spec.n_tasks]
        if bad:
            raise UserError(f"unknown task {bad[0]} for {spec.name}: it has tasks 0..{spec.n_tasks - 1}.")
        return sorted(set(self.tasks))


def setting_of(policy: Policy) -> str:
    """The paper's view setting: one main camera is single-view, anything more is multi-view."""
    return "single-view" if tuple(policy.requirements.cameras) in ((), ("main",)) else "multi-view"


def plan_run(
    store: Store,
    spec: SuiteSpec,
    backend: Backend,
    policy: Policy,
    selection: Selection,
    command: str,
    purpose: str = "evaluation",
    episode_source: Callable[[list[int], int, int], list[EpisodeSpec]] | None = None,
    only: set[tuple[int, int, int]] | None = None,
    depth_metrics: bool = False,
) -> RunPlan:
    """Work out the run id and which of the selected episodes still need running.

    `purpose` other than evaluation (e.g. demonstrations) and `depth_metrics` are part of the run key; `episode_source`
    replaces the protocol's episodes (then the selection's episodes may exceed the protocol's trials). Each
    episode runs `selection.repeats` times, each repeat with its own seed, in the same run; `only` keeps just
    these (task, episode index, repeat) places (re-running recorded episodes).
    """
    per_task = spec.episodes_per_task
    n_episodes = per_task if selection.episodes is None else selection.episodes
    if n_episodes > per_task and episode_source is None:
        raise UserError(f"--episodes {n_episodes} exceeds the {per_task} trials per task of {spec.name}.")
    task_ids = selection.task_ids(spec)
    backend.check_requirements(policy.requirements)
    if depth_metrics and not backend.serves_depth:
        raise UserError(
            f"--depth-metrics needs the main camera's depth, which the {spec.backend} backend of {spec.name} does "
            "not render; score depth on LIBERO or with --backend maniskill3."
        )
    identity = policy.identity()
    seed = int(spec.protocol["env_seed"])
    key = run_key(identity, spec, purpose, depth_metrics)
    versions = package_versions()
    fingerprint = machine_fingerprint(versions)
    episodes = (episode_source or backend.episodes)(task_ids, n_episodes, seed)
    episodes = with_repeats(episodes, selection.repeats, seed)
    if only is not None:
        episodes = [e for e in episodes if e.place in only]
    record = run_row(key, spec, identity, policy.requirements, setting_of(policy), versions, command, len(episodes))
    run_id = record["run_id"]
    states = store.episode_states(run_id)
    pending, attempts = [], {}
    for ep in episodes:
        status, tries = states.get(ep.place, (None, 0))
        retried = status == "transient" or (status == "error" and selection.retry_errors)
        if status is None or retried or (status == "error" and tries < MAX_ATTEMPTS):
            pending.append(ep)
            # a transient error (server down, disk full) gets its attempts afresh in each run that retries it,
            # and so does any error when the user asks for errors to be retried
            attempts[ep.place] = 0 if retried else tries
    notice = mixing_notice(run_id, fingerprint, store.sessions(run_id)) if pending else ""
    return RunPlan(
        run_id, spec, backend, policy, record, episodes, pending, attempts, fingerprint, [notice] * bool(notice)
    )


def with_repeats(episodes: list[EpisodeSpec], repeats: int, run_seed: int) -> list[EpisodeSpec]:
    """Each episode, then its repeats 1..repeats-1: the same trial with a seed derived from (run seed, repeat)."""
    return [
        dataclasses.replace(e, repeat=r, seed=episode_seed(run_seed, e.suite, e.task_id, e.episode_index, r))
        if r
        else e
        for e in episodes
        for r in range(repeats)
    ]


def mixing_notice(run_id: str, fingerprint: dict[str, Any], sessions: list[dict[str, Any]]) -> str:
    """One line when the run's recorded episodes come from machines other than this one ('' otherwise).

    Nothing is refused: runs are split over machines on purpose; tables mark such runs."""
    recorded = [s for s in sessions if s["episodes"]]
    here = machine_hash(fingerprint)
    others = [s for s in recorded if s["machine_hash"] != here]
    if not others:
        return ""
    last = others[-1]
    fields = sorted({name.split(".")[0] for name, _, _ in differences(json.loads(last["fingerprint"]), fingerprint)})
    fields = [f for f in fields if f != "renderer"] or ["renderer"]
    machines = sorted({f"{s['host']} ({s['machine_hash'][:8]})" for s in others})
    return (
        f"run {run_id} now mixes machines: its {sum(s['episodes'] for s in others)} episodes from "
        f"{', '.join(machines)} differ from this machine ({here[:8]}) in {', '.join(fields)}; "
        f"`qdepth-bench runs show {run_id}` lists both."
    )
