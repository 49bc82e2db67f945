"""One episode, driven a chunk at a time: reset the env to its spec, execute each action chunk open-loop,
stop at success, at the env's own end, or at the step limit.

Only the last step of a chunk is observed (the policy reads nothing in between), unless a video or a
demonstration file keeps every step: the env may skip rendering the others, which is most of a step's
cost (`Env.render_every_step` turns that off, for the equivalence test and the benchmarks).

The policy is not called here: the worker that owns the env hands each observation back to the engine,
which batches observations of many workers into one policy call and returns each its chunk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from qdepth_bench.core.policy import ObservationBatch
from qdepth_bench.core.protocol import EpisodeSpec
from qdepth_bench.core.sim import Env
from qdepth_bench.eval.timing import new_episode_timing


@dataclass
class EpisodeResult:
    """How one episode ended. Picklable: it travels from an env worker to the engine."""

    episode: EpisodeSpec
    task_name: str
    status: str  # success | failure | error
    steps: int = 0
    wall_time_s: float = 0.0
    error: str = ""
    partial_success: float | None = None
    video_path: str = ""
    #: the engine will run this episode again (an error with attempts left)
    will_retry: bool = False
    #: backend-specific outcomes of the last step (e.g. SimplerEnv's success rule, a stand-in table)
    metrics: dict = field(default_factory=dict)
    #: chunks executed, and the fewest actions handed over in one (the engine cuts chunks at the protocol's
    #: replan steps; a policy whose chunks are shorter replans more often than the protocol)
    policy_calls: int = 0
    actions_per_call: int | None = None
    #: seconds per phase (`eval.timing`): env build, reset, observed and unobserved steps, policy wait, transfer
    timing: dict = field(default_factory=new_episode_timing)
    #: the renderer of the env that ran it (`Env.renderer`), for the session's machine fingerprint
    renderer: str = ""
    #: for an error: "transient" (may pass by itself; the next run retries it) or "permanent"
    error_kind: str = ""
    #: with `run --depth-metrics`: the depth scores of its observed frames (`eval.depth_metrics`)
    depth: dict = field(default_factory=dict)

    def fail(self, error: str, transient: bool) -> EpisodeResult:
        """Turn this result into an error of the given kind (the outcome so far is dropped)."""
        self.status, self.error, self.error_kind = "error", error, "transient" if transient else "permanent"
        return self


def check_chunk(actions: np.ndarray, batch: int, action_dim: int) -> np.ndarray:
    """Validate a policy's output: (B, chunk >= 1, action_dim), finite."""
    actions = np.asarray(actions)
    if actions.ndim != 3 or actions.shape[0] != batch or actions.shape[1] < 1 or actions.shape[2] != action_dim:
        raise ValueError(f"policy returned actions of shape {actions.shape}; expected ({batch}, chunk, {action_dim})")
    if not np.all(np.isfinite(actions)):
        raise ValueError("policy returned non-finite actions")
    return actions


class EpisodeRunner:
    """The state of one running episode on one env: steps taken, frames kept for a video, the outcome."""

    def __init__(
        self,
        env: Env,
        episode: EpisodeSpec,
        max_steps: int,
        record_frames: bool = False,
        record_demo: bool = False,
    ) -> None:
        self.env = env
        self.max_steps = max_steps
        self.record_frames = record_frames
        self.observe_every_step = env.render_every_step or record_frames or record_demo
        self.frames: list[np.ndarray] = []
        #: with `record_demo`, one dataset row (frames as rendered, proprio, simulator state) per step, and its action
        self.record_demo = record_demo
        self.demo_rows: list[dict[str, np.ndarray]] = []
        self.demo_actions: list[np.ndarray] = []
        self.result = EpisodeResult(episode, env.task.task_name, "failure")
        self._start = time.perf_counter()
        self.finished = False

    def start(self) -> ObservationBatch:
        """Reset the env to the episode's initial state; returns the first observation."""
        started = time.perf_counter()
        obs = self.env.reset(self.result.episode)
        self.result.timing["reset_s"] += time.perf_counter() - started
        if self.record_frames:
            self.frames.append(self.env.frame())
        return obs

    def run_chunk(self, actions: np.ndarray) -> ObservationBatch | None:
        """Execute the chunk's actions in order; the next observation, or None once the episode is over."""
        obs = None
        self.result.policy_calls += 1
        fewest = self.result.actions_per_call
        self.result.actions_per_call = len(actions) if fewest is None else min(fewest, len(actions))
        last = len(actions) - 1
        for i, action in enumerate(actions):
            if self.record_demo:
                self.demo_rows.append(self.env.demo_frame())
                self.demo_actions.append(np.asarray(action, dtype=np.float64))
            observe = self.observe_every_step or i == last
            started = time.perf_counter()
            step = self.env.step(action, observe=observe)
            kind = "observed" if observe else "blind"
            self.result.timing[f"{kind}_step_s"] += time.perf_counter() - started
            self.result.timing[f"{kind}_steps"] += 1
            self.result.steps += 1
            obs = step.observation
            if self.record_frames:
                self.frames.append(self.env.frame())
            if "partial_success" in step.info:
                self.result.partial_success = max(
                    self.result.partial_success or 0.0, float(step.info["partial_success"])
                )
            if step.success:
                self.result.status = "success"
            if step.success or step.done or self.result.steps >= self.max_steps:
                self.finished = True
                self.result.metrics = {
                    k: v
                    for k, v in step.info.items()
                    if k != "partial_success" and isinstance(v, (bool, int, float, str))
                }
                break
        self.result.wall_time_s = time.perf_counter() - self._start
        return None if self.finished else obs
