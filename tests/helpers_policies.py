"""Policies that exist only to exercise failure paths of the engine (loaded as `helpers_policies:Name`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from qdepth_bench.core.errors import TransientError
from qdepth_bench.core.policy import ObservationBatch, Policy, PolicyRequirements


@dataclass
class RaisingConfig:
    message: str = "model exploded"


class RaisingPolicy(Policy):
    """A policy whose model raises on every call, as a bad checkpoint or a shape bug would."""

    Config = RaisingConfig

    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements()

    def act(self, batch: ObservationBatch) -> np.ndarray:
        raise RuntimeError(self.config.message)


class StateDtypePolicy(Policy):
    """Raises unless the proprio state reaches it as float64 (the simulator's dtype); else a no-op."""

    Config = RaisingConfig

    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements()

    def act(self, batch: ObservationBatch) -> np.ndarray:
        if batch.state.dtype != np.float64:
            raise TypeError(f"state arrived as {batch.state.dtype}")
        return np.zeros((len(batch), 1, 7), dtype=np.float32)


@dataclass
class FlakyConfig:
    #: while this file exists, every call fails as an unreachable policy server would (transient errors)
    down_while: str = ""
    #: while this file exists, every call fails as a model with a bug would (permanent errors)
    broken_while: str = ""


class FlakyPolicy(Policy):
    """A no-op policy whose server is 'down' (transient errors) or whose model is 'broken' (permanent
    errors) while a marker file exists."""

    Config = FlakyConfig

    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements()

    def act(self, batch: ObservationBatch) -> np.ndarray:
        if self.config.down_while and os.path.exists(self.config.down_while):
            raise TransientError("lost the connection to ws://127.0.0.1:9 4 times")
        if self.config.broken_while and os.path.exists(self.config.broken_while):
            raise RuntimeError("shape bug in the action head")
        actions = np.zeros((len(batch), 1, 7), dtype=np.float32)
        actions[:, :, -1] = -1.0
        return actions
