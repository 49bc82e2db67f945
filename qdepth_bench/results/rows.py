"""The rows the store writes, assembled in one place beside the columns they fill (`results.schema`): a run's
key and record, and a finished episode's row."""

from __future__ import annotations

import json
from typing import Any, Protocol

from qdepth_bench.core.policy import PolicyIdentity, PolicyRequirements
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.core.provenance import git_commit, host
from qdepth_bench.results.schema import DEPTH_COLUMNS
from qdepth_bench.results.store import Store


def run_key(
    identity: PolicyIdentity, spec: SuiteSpec, purpose: str = "evaluation", depth_metrics: bool = False
) -> dict[str, Any]:
    """What makes a run the same run: policy identity + suite + protocol hash + seed (+ a purpose other than
    evaluation, e.g. demonstrations, + `run --depth-metrics`, a setting of the run that leaves its protocol
    as it is but records what a run without it has not)."""
    return {
        **identity.as_record(),
        "suite": spec.name,
        "protocol_hash": spec.protocol_hash(),
        "seed": int(spec.protocol["env_seed"]),
        **({"purpose": purpose} if purpose != "evaluation" else {}),
        **({"depth_metrics": True} if depth_metrics else {}),
    }


def run_row(
    key: dict[str, Any],
    spec: SuiteSpec,
    identity: PolicyIdentity,
    requirements: PolicyRequirements,
    setting: str,
    versions: dict[str, str],
    command: str,
    episodes_requested: int,
) -> dict[str, Any]:
    """A run's record: its key, suite and protocol, the policy's identity, configuration and requirements, the
    paper's view setting, and where it was run from (commit, package versions, host, command)."""
    return {
        "run_id": Store.run_id_for(key),
        "run_key": json.dumps(key, sort_keys=True),
        "suite": spec.name,
        "suite_family": spec.family,
        "backend": spec.backend,
        **identity.as_record(),
        "policy_config": json.dumps(identity.config, sort_keys=True, default=str),
        "policy_requirements": json.dumps(requirements.__dict__, default=list),
        "setting": setting,
        "protocol": json.dumps(spec.protocol_record(), sort_keys=True),
        "protocol_hash": spec.protocol_hash(),
        "protocol_version": spec.protocol_version,
        "standard_protocol": int(spec.is_standard()),
        "seed": int(spec.protocol["env_seed"]),
        "git_commit": git_commit(),
        "package_versions": json.dumps(versions, sort_keys=True),
        "host": host(),
        "command": command,
        "replan_steps": spec.protocol.get("replan_steps"),
        "episodes_requested": episodes_requested,  # gridded tasks can have fewer episodes than the cap
        "depth_metrics": int(bool(key.get("depth_metrics"))),
    }


class FinishedEpisode(Protocol):
    """What the store needs of a finished episode (`eval.episode.EpisodeResult` has it)."""

    episode: EpisodeSpec
    task_name: str
    status: str
    partial_success: float | None
    steps: int
    wall_time_s: float
    error: str
    video_path: str
    metrics: dict
    policy_calls: int
    actions_per_call: int | None
    timing: dict
    error_kind: str
    depth: dict


def episode_row(run_id: str, suite: str, result: FinishedEpisode, attempts: int, session_id: str) -> dict[str, Any]:
    """One finished episode's row, pointing at the session that ran it (its video was written by the worker)."""
    episode = result.episode
    return {
        "run_id": run_id,
        "suite": suite,
        "task_id": episode.task_id,
        "task_name": result.task_name,
        "episode_index": episode.episode_index,
        "repeat": episode.repeat,
        "variant": episode.variant,
        "seed": episode.seed,
        "status": result.status,
        "success": None if result.status == "error" else int(result.status == "success"),
        "partial_success": result.partial_success,
        "steps": result.steps,
        "wall_time_s": round(result.wall_time_s, 4),
        "error": result.error,
        "video_path": result.video_path,
        "attempts": attempts,
        "metrics": json.dumps(result.metrics, sort_keys=True),
        "policy_calls": result.policy_calls,
        "actions_per_call": result.actions_per_call,
        "timing": json.dumps({k: round(float(v), 4) for k, v in result.timing.items()}, sort_keys=True),
        "session_id": session_id,
        "error_kind": result.error_kind or None,
        **{name: result.depth.get(name) for name in DEPTH_COLUMNS},
        "depth_detail": json.dumps(result.depth["depth_detail"], sort_keys=True) if result.depth else None,
    }
