"""Plan a run (which episodes of which tasks, which are already recorded) and execute it into the store.

The run key is the policy identity + suite + protocol hash + seed; the store's run id is its hash, so
repeating a command resumes it: recorded successes and failures are skipped, errors are retried up to
`MAX_ATTEMPTS` times. Each finished episode is committed before the next starts.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..policy import Policy
from ..provenance import git_commit, host, package_versions
from ..store import Store
from ..suite import Backend, EpisodeSpec, Env, SuiteSpec
from .episode import EpisodeResult, run_episode
from .interrupt import GracefulInterrupt
from .videos import video_path, write_video

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
    attempts: dict[tuple[int, int], int] = field(default_factory=dict)


def parse_tasks(text: str | None, n_tasks: int, suite: str) -> list[int]:
    """'0,2,5-7' -> [0, 2, 5, 6, 7]; None -> every task. Out-of-range ids name the valid range."""
    if text is None or not text.strip():
        return list(range(n_tasks))
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                ids.extend(range(lo, hi + 1))
            else:
                ids.append(int(part))
        except ValueError:
            raise UserError(f"--tasks '{text}' is not a list of task ids such as 0,1 or 0-4.") from None
    bad = [t for t in ids if not 0 <= t < n_tasks]
    if bad:
        raise UserError(f"unknown task {bad[0]} for {suite}: it has tasks 0..{n_tasks - 1}.")
    return sorted(set(ids))


def setting_of(policy: Policy) -> str:
    """The paper's view setting: one main camera is single-view, anything more is multi-view."""
    return "single-view" if tuple(policy.requirements.cameras) in ((), ("main",)) else "multi-view"


def plan_run(store: Store, spec: SuiteSpec, backend: Backend, policy: Policy, tasks: str | None,
             n_episodes: int | None, command: str) -> RunPlan:
    """Work out the run id and which of the requested episodes still need running."""
    per_task = spec.episodes_per_task
    if n_episodes is None:
        n_episodes = per_task
    if n_episodes < 1:
        raise UserError(f"--episodes must be at least 1 (got {n_episodes}).")
    if n_episodes > per_task:
        raise UserError(f"--episodes {n_episodes} exceeds the {per_task} trials per task of {spec.name}.")
    task_ids = parse_tasks(tasks, spec.n_tasks, spec.name)
    backend.check_requirements(policy.requirements)
    identity = policy.identity()
    seed = int(spec.protocol["env_seed"])
    key = {**identity.as_record(), "suite": spec.name, "protocol_hash": spec.protocol_hash(), "seed": seed}
    run_id = Store.run_id_for(key)
    record = {
        "run_id": run_id, "run_key": json.dumps(key, sort_keys=True), "suite": spec.name,
        "suite_family": spec.family, "backend": spec.backend, **identity.as_record(),
        "policy_config": json.dumps(identity.config, sort_keys=True, default=str),
        "policy_requirements": json.dumps(policy.requirements.__dict__, default=list),
        "setting": setting_of(policy), "protocol": json.dumps(spec.protocol_record(), sort_keys=True),
        "protocol_hash": spec.protocol_hash(), "protocol_version": spec.protocol_version,
        "standard_protocol": int(spec.is_standard()), "seed": seed, "git_commit": git_commit(),
        "package_versions": json.dumps(package_versions(), sort_keys=True), "host": host(),
        "command": command, "episodes_requested": n_episodes * len(task_ids),
    }
    episodes = backend.episodes(task_ids, n_episodes, seed)
    states = store.episode_states(run_id)
    pending, attempts = [], {}
    for ep in episodes:
        status, tries = states.get((ep.task_id, ep.episode_index), (None, 0))
        if status is None or (status == "error" and tries < MAX_ATTEMPTS):
            pending.append(ep)
            attempts[(ep.task_id, ep.episode_index)] = tries
    return RunPlan(run_id, spec, backend, policy, record, episodes, pending, attempts)


def _error_text(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last[:2000]


def execute(store: Store, plan: RunPlan, video_dir: Path | None = None,
            on_episode: Callable[[EpisodeResult], None] | None = None) -> None:
    """Run the plan's pending episodes one task at a time (one env per task), recording each at once.

    A simulator or policy exception fails only its episode (recorded as an error, env rebuilt); Ctrl-C
    marks the run interrupted and re-raises, with every finished episode already committed.
    """
    spec, policy = plan.spec, plan.policy
    max_steps, replan = int(spec.protocol["max_steps"]), int(spec.protocol["replan_steps"])
    requirements = policy.requirements
    store.start_run(plan.record)
    status = "failed"
    env: Env | None = None
    with GracefulInterrupt() as stop:
        try:
            for episode in plan.pending:
                stop.check()
                if env is not None and env.task.task_id != episode.task_id:
                    env.close()
                    env = None
                try:
                    if env is None:
                        env = plan.backend.make_env(episode.task_id, requirements)
                    result = run_episode(env, policy, episode, max_steps, replan,
                                         record_frames=video_dir is not None, check_stop=stop.check)
                except (UserError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded as this episode's error, the run goes on
                    task_name = env.task.task_name if env else ""
                    result = EpisodeResult(episode, task_name, "error", error=_error_text(exc))
                    if env is not None:
                        env.close()
                    env = None
                _record(store, plan, result, video_dir)
                if on_episode is not None:
                    on_episode(result)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if env is not None:
                env.close()
            store.finish_run(plan.run_id, status)


def _record(store: Store, plan: RunPlan, result: EpisodeResult, video_dir: Path | None) -> None:
    """Write one episode (and its video) to the store."""
    episode, spec = result.episode, plan.spec
    video = ""
    if video_dir is not None and result.frames:
        path = video_path(video_dir, plan.run_id, spec.name, episode.task_id, episode.episode_index, result.status)
        video = str(write_video(path, result.frames, int(spec.protocol["control_hz"])))
    store.record_episode({
        "run_id": plan.run_id, "suite": spec.name, "task_id": episode.task_id, "task_name": result.task_name,
        "episode_index": episode.episode_index, "variant": episode.variant, "seed": episode.seed,
        "status": result.status, "success": None if result.status == "error" else int(result.status == "success"),
        "partial_success": result.partial_success, "steps": result.steps,
        "wall_time_s": round(result.wall_time_s, 4), "error": result.error, "video_path": video,
        "attempts": plan.attempts.get((episode.task_id, episode.episode_index), 0) + 1,
    })
