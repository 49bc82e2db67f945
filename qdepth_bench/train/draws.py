"""Which rows of a step's global batch each rank trains, and their flow noise and flow times.

Every draw is keyed by (seed, step, row), `row` being the sample's position in the step's global batch
(all ranks, all micro-steps), and rank r of W owns rows `rank_rows(micro, r, W, micro_batch)`. So ranks
draw different noise and times (their rows differ), a resumed run draws exactly what the uninterrupted one
would (no generator state to carry over), and with the data stream's fixed order (`train.data`: block B of
the run goes to rank B mod W) the global batch of a step is the same at any world size: one process with
the whole global batch trains the same model as several processes sharing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from qdepth_bench.models.qdepth.model import QDepthVLA

_PICK, _FLOW = 0, 1  # separate streams of one row: which sample, and its noise and time


def rank_rows(micro: int, rank: int, world: int, micro_batch: int) -> range:
    """The global-batch rows that `rank` trains on in micro-step `micro`."""
    start = (micro * world + rank) * micro_batch
    return range(start, start + micro_batch)


def _seed(seed: int, step: int, row: int, stream: int) -> int:
    state = np.random.SeedSequence([seed, step, row, stream]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def flow_draws(model: QDepthVLA, seed: int, step: int, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow-matching noise (rows, chunk, action_dim) and flow times (rows,) on the CPU, one generator per row."""
    c = model.config
    noise, tau = [], []
    for row in rows:
        generator = torch.Generator().manual_seed(_seed(seed, step, row, _FLOW))
        noise.append(torch.randn(c.chunk_size, c.action_dim, generator=generator))
        tau.append(model.sample_tau(1, torch.device("cpu"), generator))
    return torch.stack(noise), torch.cat(tau)
