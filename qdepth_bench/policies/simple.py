"""Policies that need no model: floors for success rates, load generators for benchmarks, test drivers."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, Policy, PolicyRequirements, check_ranges


@dataclass
class RandomConfig:
    """`scale` shrinks the sampled range around its centre (1.0: the suite's full action bounds)."""

    chunk_size: int = 5
    scale: float = 1.0
    cameras: tuple[str, ...] = ("main",)

    def __post_init__(self) -> None:
        check_ranges(self, positive=("chunk_size", "scale"))


class RandomPolicy(Policy):
    """Uniform random actions within the suite's bounds, gripper dimension +-1.

    Each episode draws from its own generator seeded by the episode seed, so the actions of an episode do
    not depend on how episodes are batched or ordered across workers.
    """

    Config = RandomConfig

    def __init__(self, config: RandomConfig, name: str = "random") -> None:
        super().__init__(config, name)
        self._episodes: dict[str, tuple[np.random.Generator, EpisodeContext]] = {}

    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements(cameras=tuple(self.config.cameras), chunk_size=self.config.chunk_size)

    def reset(self, episode: EpisodeContext) -> None:
        self._episodes[episode.key] = (np.random.default_rng(episode.seed), episode)

    def act(self, batch: ObservationBatch) -> np.ndarray:
        chunks = []
        for key in batch.keys:
            rng, episode = self._episodes[key]
            low = np.asarray(episode.task.action_low, dtype=np.float64)
            high = np.asarray(episode.task.action_high, dtype=np.float64)
            centre, half = (low + high) / 2, (high - low) / 2 * self.config.scale
            chunk = rng.uniform(centre - half, centre + half, size=(self.config.chunk_size, len(low)))
            chunk[:, -1] = np.where(chunk[:, -1] >= centre[-1], high[-1], low[-1])
            chunks.append(chunk)
        return np.asarray(chunks, dtype=np.float32)


@dataclass
class NoopConfig:
    """`call_seconds` makes every call cost that much time whatever the batch size, like a model on a
    GPU: what the engine's batching benchmark measures against."""

    chunk_size: int = 5
    cameras: tuple[str, ...] = ("main",)
    call_seconds: float = 0.0

    def __post_init__(self) -> None:
        check_ranges(self, positive=("chunk_size",), non_negative=("call_seconds",))


class NoopPolicy(Policy):
    """Always the suite's no-op action (hold still, gripper open): what the scene does on its own."""

    Config = NoopConfig
    uses_seed = False

    def __init__(self, config: NoopConfig, name: str = "noop") -> None:
        super().__init__(config, name)
        self._noop: dict[str, np.ndarray] = {}

    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements(cameras=tuple(self.config.cameras), chunk_size=self.config.chunk_size)

    def reset(self, episode: EpisodeContext) -> None:
        self._noop[episode.key] = np.asarray(episode.task.noop_action, dtype=np.float32)

    def act(self, batch: ObservationBatch) -> np.ndarray:
        if self.config.call_seconds > 0:
            time.sleep(self.config.call_seconds)
        return np.stack([np.tile(self._noop[k], (self.config.chunk_size, 1)) for k in batch.keys])
