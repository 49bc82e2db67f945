"""Suites: versioned protocol data (from `suites/*.yaml`) plus a simulator backend that runs it.

A `SuiteSpec` is pure data: the protocol constants a run is recorded and keyed with. A `Backend` turns a
spec into tasks, episode specs and environments. An `Env` runs one episode at a time: `reset` to an
episode spec (initial state, seed, settle steps), then `step` with one action until done. Observations come
back already preprocessed as the protocol says (rotation, resize, proprio layout), as a one-row
`ObservationBatch`, so the rollout loop never knows which simulator it drives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import UserError
from .hashing import derive_seed, stable_hash
from .policy import ObservationBatch, PolicyRequirements, TaskInfo


@dataclass(frozen=True)
class SuiteSpec:
    """One registered suite: its name, backend and the protocol constants that define comparability."""

    name: str
    family: str
    backend: str
    protocol_version: int
    robot: str
    protocol: dict[str, Any]
    n_tasks: int
    label: str
    aliases: tuple[str, ...] = ()
    #: protocol values other references use, accepted as standard (e.g. LeRobot's 280 spatial max steps)
    alternatives: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: protocol values changed from this file's defaults for one run
    overrides: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: every backend that can run this suite (the first is `backend`, the default)
    backends: tuple[str, ...] = ()

    @property
    def episodes_per_task(self) -> int:
        return int(self.protocol["trials_per_task"])

    def task_episode_counts(self) -> list[int]:
        """Episodes of each task: its grid cells where tasks have episode grids (SIMPLER), else the trials."""
        if not self.protocol.get("tasks"):
            return [self.episodes_per_task] * self.n_tasks
        from .envs.simpler_grid import grid_episode_counts

        return grid_episode_counts(self.protocol)

    def with_overrides(self, overrides: dict[str, Any]) -> SuiteSpec:
        """A copy whose protocol has `overrides` applied (recorded in the run; changes its protocol hash).

        Trials per task of a gridded suite follow its grid mode and repeats, so they are derived again."""
        unknown = sorted(set(overrides) - set(self.protocol))
        if unknown:
            raise UserError(f"suite '{self.name}' has no protocol setting '{unknown[0]}' to override; "
                            f"drop that option for this suite.")
        overrides = {k: v for k, v in overrides.items() if self.protocol[k] != v}  # a default is no override
        protocol = {**self.protocol, **overrides}
        if protocol.get("tasks"):
            from .envs.simpler_grid import grid_episode_counts

            protocol["trials_per_task"] = max(grid_episode_counts(protocol))
        return SuiteSpec(**{**self.__dict__, "protocol": protocol, "overrides": {**self.overrides, **overrides}})

    @property
    def backend_choices(self) -> tuple[str, ...]:
        return self.backends or (self.backend,)

    def with_backend(self, backend: str) -> SuiteSpec:
        """A copy run on another of its simulators; the backend is part of the protocol record."""
        if backend not in self.backend_choices:
            raise UserError(f"suite '{self.name}' runs on {', '.join(self.backend_choices)}, "
                            f"not '{backend}'; pass one of those to --backend.")
        return SuiteSpec(**{**self.__dict__, "backend": backend})

    def protocol_record(self) -> dict[str, Any]:
        """Everything that makes two runs comparable: backend, version and every protocol constant."""
        return {"suite": self.name, "backend": self.backend, "protocol_version": self.protocol_version,
                **self.protocol}

    def protocol_hash(self) -> str:
        return stable_hash(self.protocol_record())

    def is_standard(self) -> bool:
        """True unless an override moved a constant off every published reference's value."""
        return all(value in self.alternatives.get(key, {}).values() for key, value in self.overrides.items())


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: which task, which trial index, the seed it gets, and its variant fields."""

    suite: str
    task_id: int
    episode_index: int
    seed: int
    variant: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.task_id}/{self.episode_index}"


def episode_seed(run_seed: int, suite: str, task_id: int, episode_index: int) -> int:
    """The seed of one episode: fixed by the run seed and the episode's place, not by execution order."""
    return derive_seed(run_seed, suite, task_id, episode_index)


@dataclass
class StepResult:
    observation: ObservationBatch
    done: bool
    success: bool
    info: dict[str, Any] = field(default_factory=dict)


class Env(ABC):
    """One simulator instance for one task, reused across that task's episodes."""

    task: TaskInfo

    @abstractmethod
    def reset(self, episode: EpisodeSpec) -> ObservationBatch:
        """Put the simulator in the episode's initial state (including settle steps); return the first obs."""

    @abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action of the suite's action space."""

    def frame(self) -> np.ndarray:
        """The main camera image of the last observation as the policy sees it (for videos)."""
        raise NotImplementedError

    def demo_frame(self) -> dict[str, np.ndarray]:
        """The last observation as one row of the suite's demonstration-file layout (for data generation)."""
        raise NotImplementedError(f"{type(self).__name__} cannot record demonstrations")

    def close(self) -> None:
        """Free the simulator."""


class Backend(ABC):
    """Turns a `SuiteSpec` into tasks and environments for one simulator."""

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

    def check_requirements(self, requirements: PolicyRequirements) -> None:
        """Raise `UserError` when the policy needs something this suite cannot give."""
