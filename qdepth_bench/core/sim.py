"""The simulator contract: a `Backend` turns a `SuiteSpec` into tasks and environments; an `Env` runs episodes.

An `Env` runs one episode at a time: `reset` to an episode spec (initial state, seed, settle steps), then
`step` with one action until done. Observations come back already preprocessed as the protocol says
(rotation, resize, proprio layout), as a one-row `ObservationBatch`, so the rollout engine never knows which
simulator it drives. A simulator registers one `SimulatorInfo` (`registry/sims.py`): its backend class,
the line that installs it, its doctor checks and whether tables tag its rows with its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.policy import CAMERA_ROLES, ObservationBatch, PolicyRequirements, TaskInfo
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec, episode_seed


@dataclass
class StepResult:
    #: None when the step was taken with `observe=False` and the backend skipped rendering
    observation: ObservationBatch | None
    done: bool
    success: bool
    info: dict[str, Any] = field(default_factory=dict)


class Env(ABC):
    """One simulator instance for one task, reused across that task's episodes.

    Subclasses keep the simulator they wrap in `sim_env` and their last observation in `last_observation`,
    which is all the default `frame` and `close` need."""

    task: TaskInfo
    sim_env: Any = None
    last_observation: ObservationBatch | None = None
    #: render at every step, settle steps included, even when nobody reads the frame, as the reference
    #: evaluation loops do: what the lazy-rendering equivalence test and the benchmarks compare against
    render_every_step: bool = False

    @abstractmethod
    def reset(self, episode: EpisodeSpec) -> ObservationBatch:
        """Put the simulator in the episode's initial state (including settle steps); return the first obs."""

    @abstractmethod
    def step(self, action: np.ndarray, observe: bool = True) -> StepResult:
        """Apply one action of the suite's action space.

        `observe=False` says nobody will read this step's observation (an action inside an open-loop chunk):
        a backend may then skip rendering and return `observation=None`. Physics, `done`, `success` and
        `info` must not depend on it, and the next observed step must look exactly as if every step had
        been observed (the lazy-rendering equivalence test checks this per backend)."""

    def frame(self) -> np.ndarray:
        """The main camera image of the last observation as the policy sees it (for videos)."""
        if self.last_observation is None:
            raise RuntimeError("frame() before reset()")
        return self.last_observation.images["main"][0]

    def demo_frame(self) -> dict[str, np.ndarray]:
        """The last observation as one row of the suite's demonstration-file layout (for data generation)."""
        raise NotImplementedError(f"{type(self).__name__} cannot record demonstrations")

    def restore(self, sim_state: np.ndarray) -> ObservationBatch:
        """Put the simulator in a recorded state and observe it (re-rendering demonstrations, e.g. for depth)."""
        raise NotImplementedError(f"{type(self).__name__} cannot restore recorded states")

    def renderer(self) -> str:
        """The device string of the simulator's own rendering context (GL renderer, Vulkan device), once the
        env has rendered; it enters the run's machine fingerprint. '' where the backend cannot tell."""
        return ""

    def close(self) -> None:
        """Free the simulator."""
        sim_env, self.sim_env = self.sim_env, None
        if sim_env is not None:
            sim_env.close()


class Backend(ABC):
    """Turns a `SuiteSpec` into tasks and environments for one simulator."""

    #: what this simulator can hand a policy beyond camera images and proprio
    serves_depth: bool = False
    serves_privileged: bool = False

    def __init__(self, spec: SuiteSpec) -> None:
        self.spec = spec

    @abstractmethod
    def task_info(self, task_id: int) -> TaskInfo:
        """Name, instruction and action/state conventions of one task."""

    def episodes(self, task_ids: list[int], n_episodes: int, run_seed: int) -> list[EpisodeSpec]:
        """Episode specs for the first `n_episodes` trials of each task (trial i: initial state i)."""
        return [
            EpisodeSpec(self.spec.name, t, i, episode_seed(run_seed, self.spec.name, t, i), {"init_state": i})
            for t in task_ids
            for i in range(n_episodes)
        ]

    @abstractmethod
    def make_env(self, task_id: int, requirements: PolicyRequirements) -> Env:
        """Build a simulator for one task rendering only the cameras the policy asks for."""

    def task_id_of_scene(self, scene_file: str) -> int | None:
        """The task whose scene file (as demonstration files record it) has this name; None when none has."""
        return None

    def check_requirements(self, requirements: PolicyRequirements) -> None:
        """Raise `UserError`, before any episode, when the policy needs what this suite cannot give: a camera
        the protocol does not name, another proprio layout or action size, depth or privileged state."""
        name, protocol = self.spec.name, self.spec.protocol
        cameras = protocol.get("cameras", {"main": None})
        unknown = [c for c in requirements.cameras if c not in cameras]
        if unknown:
            raise UserError(
                f"policy asks for camera '{unknown[0]}'; {name} has "
                f"{', '.join(r for r in CAMERA_ROLES if r in cameras)}."
            )
        layout = protocol.get("state_layout")
        if requirements.state_layouts and layout not in requirements.state_layouts:
            raise UserError(
                f"policy expects state layout {', '.join(requirements.state_layouts)}; {name} gives {layout}."
            )
        dim = len(protocol["noop_action"])
        if requirements.action_dim not in (None, dim):
            raise UserError(f"policy emits {requirements.action_dim}-value actions; {name} takes {dim}.")
        backend = self.spec.backend
        if requirements.depth and not self.serves_depth:
            raise UserError(
                f"policy needs depth images, which the {backend} backend of {name} does not render; "
                "choose a suite whose simulator renders depth (LIBERO)."
            )
        if requirements.privileged and not self.serves_privileged:
            raise UserError(
                f"policy needs privileged simulator state (a scripted expert), which the {backend} "
                f"backend of {name} does not provide; choose another --backend or policy."
            )


@dataclass
class RecordedEpisode:
    """One finished episode as an `EpisodeSink` receives it: what ran, how it ended, what was recorded."""

    episode: EpisodeSpec
    task: TaskInfo
    run_id: str
    status: str
    control_hz: int
    frames: list[np.ndarray] = field(default_factory=list)
    demo_rows: list[dict[str, np.ndarray]] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)


class EpisodeSink(Protocol):
    """Something that keeps finished episodes in some file format (videos, demonstration files).

    The env worker records what a sink asks for and hands it each finished episode, so the engine knows no
    file format. A sink must pickle (it travels to spawned workers)."""

    @property
    def name(self) -> str:
        """ "video" for the sink whose path is recorded with the episode."""

    @property
    def wants_frames(self) -> bool:
        """Whether the worker keeps each step's main-camera frame for this sink."""

    @property
    def wants_demo(self) -> bool:
        """Whether the worker keeps each step's demonstration row and action for this sink."""

    def write(self, record: RecordedEpisode) -> str | None:
        """Keep one episode; the path written, if any."""


class DemoWriter(EpisodeSink, Protocol):
    """An `EpisodeSink` that keeps successful episodes as demonstration files, one part per episode, and
    merges a task's parts into the simulator's dataset layout (`data generate`)."""

    def count(self, task_id: int) -> int:
        """Demonstrations of this task written so far."""

    def merge(self, task_id: int, limit: int) -> int:
        """Merge the task's first `limit` demonstrations into one file; how many it holds."""


@dataclass(frozen=True)
class SimulatorInfo:
    """A simulator as the registry knows it before importing it (its package may not be installed)."""

    name: str
    #: "module:Class" of its `Backend`
    backend: str
    #: the command that installs it
    install_hint: str
    #: "module:function" returning this simulator's doctor checks (`core.checks.Check`), imported by `doctor`
    checks: str = ""
    #: tables write this simulator's name beside a row's method (suites that run on several simulators)
    tag_rows: bool = False
    #: "module:factory" of its `DemoWriter`, called with (folder, backend, task ids, format); "" when it has none
    demo_writer: str = ""
    #: the dataset formats its `DemoWriter` writes (`data generate --format`), the first the default
    demo_formats: tuple[str, ...] = ()
    #: "module:function" returning the `WorkerEnvironment` its env workers run in (None: this Python), for a
    #: simulator whose dependencies cannot share the main environment; "" for one that always runs here
    worker_environment: str = ""


@dataclass(frozen=True)
class WorkerEnvironment:
    """Another Python environment that env workers run in (e.g. SimplerEnv's, which needs numpy < 2).

    The engine starts `python -m qdepth_bench.eval.foreign_worker` there with `variables` added to the
    environment; messages cross in `eval.messages`' format, which any numpy version reads."""

    python: str
    variables: dict[str, str] = field(default_factory=dict)
    #: what it is, for messages ("SimplerEnv's environment .venv-simplerenv")
    label: str = ""
