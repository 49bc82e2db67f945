"""Protocols as data: a suite's versioned constants (from `content/suites/*.yaml`) and its episodes.

A `SuiteSpec` is pure data: the protocol constants a run is recorded and keyed with, and its hash. An
`EpisodeSpec` names one episode of a run. Neither knows which simulator runs them (`core/sim.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qdepth_bench.core.episode_grid import grid_episode_counts
from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import derive_seed, stable_hash
from qdepth_bench.core.perturbation import PERTURBATION_KEY, Perturbation


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
        return grid_episode_counts(self.protocol)

    def with_overrides(self, overrides: dict[str, Any]) -> SuiteSpec:
        """A copy whose protocol has `overrides` applied (recorded in the run; changes its protocol hash).

        Trials per task of a gridded suite follow its grid mode and repeats, so they are derived again."""
        unknown = sorted(set(overrides) - set(self.protocol))
        if unknown:
            raise UserError(
                f"suite '{self.name}' has no protocol setting '{unknown[0]}' to override; "
                f"drop that option for this suite."
            )
        overrides = {k: v for k, v in overrides.items() if self.protocol[k] != v}  # a default is no override
        protocol = with_grid_trials({**self.protocol, **overrides})
        return SuiteSpec(**{**self.__dict__, "protocol": protocol, "overrides": {**self.overrides, **overrides}})

    def for_policy(self, requirements: Any) -> SuiteSpec:
        """The suite as a policy with these `PolicyRequirements` runs it: a resize method the policy was
        trained with becomes a protocol override (recorded, and standard only where a published reference
        evaluates that way: `alternatives`)."""
        resize = getattr(requirements, "image_resize", None)
        if resize is None or "image_resize" not in self.protocol:
            return self
        return self.with_overrides({"image_resize": resize})

    def with_perturbation(self, perturbation: Perturbation) -> SuiteSpec:
        """A copy whose protocol also records `perturbation` (its own hash; non-standard). Name, seed and
        initial states stay, so each episode has the unperturbed protocol's episode as its twin."""
        if PERTURBATION_KEY in self.protocol:
            raise UserError(f"suite '{self.name}' is already perturbed; give one perturbation per run.")
        record = perturbation.record()
        return SuiteSpec(
            **{
                **self.__dict__,
                "protocol": {**self.protocol, PERTURBATION_KEY: record},
                "overrides": {**self.overrides, PERTURBATION_KEY: record},
            }
        )

    @property
    def backend_choices(self) -> tuple[str, ...]:
        return self.backends or (self.backend,)

    def with_backend(self, backend: str) -> SuiteSpec:
        """A copy run on another of its simulators; the backend is part of the protocol record."""
        if backend not in self.backend_choices:
            raise UserError(
                f"suite '{self.name}' runs on {', '.join(self.backend_choices)}, "
                f"not '{backend}'; pass one of those to --backend."
            )
        return SuiteSpec(**{**self.__dict__, "backend": backend})

    def protocol_record(self) -> dict[str, Any]:
        """Everything that makes two runs comparable: backend, version and every protocol constant."""
        return {"suite": self.name, "backend": self.backend, "protocol_version": self.protocol_version, **self.protocol}

    def protocol_hash(self) -> str:
        return stable_hash(self.protocol_record())

    def is_standard(self) -> bool:
        """True unless an override moved a constant off every published reference's value."""
        return all(value in self.alternatives.get(key, {}).values() for key, value in self.overrides.items())


def with_grid_trials(protocol: dict[str, Any]) -> dict[str, Any]:
    """A gridded protocol (per-task episode grids) with its trials per task derived from the grid mode and
    repeats: the largest task's episodes. Other protocols come back unchanged."""
    if not protocol.get("tasks"):
        return protocol
    return {**protocol, "trials_per_task": max(grid_episode_counts(protocol))}


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: which task, which trial index, the seed it gets, and its variant fields.

    `repeat` > 0 runs the same trial (initial state, grid cell) again with a seed of its own (`--repeats`)."""

    suite: str
    task_id: int
    episode_index: int
    seed: int
    variant: dict[str, Any] = field(default_factory=dict)
    repeat: int = 0

    @property
    def key(self) -> str:
        """The episode's label, e.g. `libero_object/0/3/r1`: what policies key their per-episode state by and
        what logs and messages name it by (`place` is where the store keeps it)."""
        return f"{self.suite}/{self.task_id}/{self.episode_index}" + (f"/r{self.repeat}" if self.repeat else "")

    @property
    def place(self) -> tuple[int, int, int]:
        """(task, episode index, repeat): where the episode sits in its run, as the results store keys it."""
        return (self.task_id, self.episode_index, self.repeat)


def episode_seed(run_seed: int, suite: str, task_id: int, episode_index: int, repeat: int = 0) -> int:
    """The seed of one episode: fixed by the run seed and the episode's place, not by execution order.
    Repeat 0 keeps the seed episodes had before repeats existed, so earlier runs stay resumable."""
    return derive_seed(run_seed, suite, task_id, episode_index, *(("repeat", repeat) if repeat else ()))
