"""A toy simulator, registered the way a simulator from another package is (an entry point): a point on a
line that must reach x >= 1. The architecture test shows that doctor, suites, requirement checks and
tables pick it up with nothing else added."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from qdepth_bench.core.checks import Check
from qdepth_bench.core.policy import ObservationBatch, Policy, PolicyRequirements, TaskInfo
from qdepth_bench.core.protocol import EpisodeSpec
from qdepth_bench.core.sim import Backend, Env, SimulatorInfo, StepResult


def checks() -> list[Check]:
    return [Check("toy line world", True, "renders nothing, needs nothing", required=False)]


class LineEnv(Env):
    def __init__(self, task: TaskInfo, size: int, max_steps: int) -> None:
        self.task, self.size, self.max_steps = task, size, max_steps
        self.x, self.steps, self.key = 0.0, 0, ""

    def _observation(self) -> ObservationBatch:
        image = np.full((1, self.size, self.size, 3), int(255 * min(max(self.x, 0.0), 1.0)), np.uint8)
        self.last_observation = ObservationBatch(
            [self.key], {"main": image}, np.array([[self.x]]), [self.task.instruction]
        )
        return self.last_observation

    def reset(self, episode: EpisodeSpec) -> ObservationBatch:
        self.x, self.steps, self.key = 0.0, 0, episode.key
        return self._observation()

    def step(self, action: np.ndarray, observe: bool = True) -> StepResult:
        # a test that interrupts a run slows the world down, so the run cannot finish before the signal lands
        time.sleep(float(os.environ.get("TOY_STEP_SECONDS", "0")))
        self.x += 0.25 * float(np.clip(action[0], -1, 1))
        self.steps += 1
        success = self.x >= 1.0
        observation = self._observation() if observe else None
        return StepResult(observation, success or self.steps >= self.max_steps, success)


class LineBackend(Backend):
    def task_info(self, task_id: int) -> TaskInfo:
        p = self.spec.protocol
        return TaskInfo(
            self.spec.name,
            task_id,
            f"reach_{task_id}",
            "move right until x >= 1",
            "point",
            tuple(p["action_low"]),
            tuple(p["action_high"]),
            tuple(p["noop_action"]),
            p["state_layout"],
        )

    def make_env(self, task_id: int, requirements: PolicyRequirements) -> LineEnv:
        return LineEnv(self.task_info(task_id), requirements.image_size, int(self.spec.protocol["max_steps"]))


TOY = SimulatorInfo(
    name="toy_line",
    backend="helpers_toy_sim:LineBackend",
    install_hint="nothing to install",
    checks="helpers_toy_sim:checks",
    tag_rows=True,
)


class PushRight(Policy):
    """Always the largest step right: solves the toy task in 4 steps."""

    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements(image_size=8)

    def act(self, batch: ObservationBatch) -> np.ndarray:
        return np.ones((len(batch.keys), 1, 1), np.float32)


class PushRightAgain(PushRight):
    """PushRight under another name: an ablation variant that changes nothing (every pair concordant)."""


class NeedsDepth(PushRight):
    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements(image_size=8, depth=True)


def toy_suite_yaml(trials_per_task: int, max_steps: int) -> str:
    """The toy family's suite file: two reach tasks."""
    return f"""
family: toy_line
backend: toy_line
protocol_version: 1
robot: point
protocol:
  trials_per_task: {trials_per_task}
  max_steps: {max_steps}
  replan_steps: 1
  control_hz: 10
  env_seed: 0
  cameras: {{main: top}}
  state_layout: x
  noop_action: [0]
  action_low: [-1]
  action_high: [1]
suites:
  line_reach: {{n_tasks: 2, label: Reach}}
"""


def install_toy_plugin(folder: Path, trials_per_task: int, max_steps: int) -> dict[str, str]:
    """Register the toy simulator as a plugin package would (an entry point) with its suite in a content
    folder, under `folder`; the environment variables a CLI subprocess needs to find both."""
    plugins = folder / "plugins" / "toy_line-0.1.dist-info"
    plugins.mkdir(parents=True)
    (plugins / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-line\nVersion: 0.1\n")
    (plugins / "entry_points.txt").write_text("[qdepth_bench.simulators]\ntoy_line = helpers_toy_sim:TOY\n")
    (folder / "content" / "suites").mkdir(parents=True)
    (folder / "content" / "suites" / "toy.yaml").write_text(toy_suite_yaml(trials_per_task, max_steps))
    paths = [str(folder / "plugins"), str(Path(__file__).parent), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p), "QDEPTH_BENCH_CONTENT": str(folder / "content")}
