"""Policies that exist only to exercise failure paths of the engine (loaded as `helpers_policies:Name`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
