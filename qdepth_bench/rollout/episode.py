"""One episode: reset the env to its spec, ask the policy for chunks, execute them open-loop, stop at
success or the step limit."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..policy import EpisodeContext, ObservationBatch, Policy
from ..suite import EpisodeSpec, Env


@dataclass
class EpisodeResult:
    episode: EpisodeSpec
    task_name: str
    status: str  # success | failure | error
    steps: int = 0
    wall_time_s: float = 0.0
    error: str = ""
    partial_success: float | None = None
    frames: list[np.ndarray] = field(default_factory=list)


def check_chunk(actions: np.ndarray, batch: int, action_dim: int) -> np.ndarray:
    """Validate a policy's output: (B, chunk >= 1, action_dim), finite."""
    actions = np.asarray(actions)
    if actions.ndim != 3 or actions.shape[0] != batch or actions.shape[1] < 1 or actions.shape[2] != action_dim:
        raise ValueError(f"policy returned actions of shape {actions.shape}; expected ({batch}, chunk, {action_dim})")
    if not np.all(np.isfinite(actions)):
        raise ValueError("policy returned non-finite actions")
    return actions


def run_episode(env: Env, policy: Policy, episode: EpisodeSpec, max_steps: int, replan_steps: int,
                record_frames: bool = False, check_stop: Callable[[], None] = lambda: None) -> EpisodeResult:
    """Run one episode to success or `max_steps` policy steps; chunks run open-loop for `replan_steps`.

    `check_stop` is called before every step and may raise KeyboardInterrupt to abandon the episode.
    """
    start = time.perf_counter()
    task = env.task
    policy.reset(EpisodeContext(episode.key, task, episode.seed))
    obs: ObservationBatch = env.reset(episode)
    check_stop()
    result = EpisodeResult(episode, task.task_name, "failure")
    if record_frames:
        result.frames.append(env.frame())
    plan: list[np.ndarray] = []
    while result.steps < max_steps:
        check_stop()
        if not plan:
            chunk = check_chunk(policy.act(obs), 1, task.action_dim)[0]
            plan = list(chunk[:replan_steps])
        step = env.step(plan.pop(0))
        result.steps += 1
        obs = step.observation
        if record_frames:
            result.frames.append(env.frame())
        if step.success:
            result.status = "success"
            break
        if step.done:
            break
    result.wall_time_s = time.perf_counter() - start
    return result
