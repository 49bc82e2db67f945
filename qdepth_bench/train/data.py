"""Training samples from a recipe's data: episodes from any reader, with their depth annotation and codes
from the cache beside the dataset, turned into model batches (tokenised, normalised tensors)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets import depth as depth_cache
from qdepth_bench.datasets.episode import Episode, sample_at
from qdepth_bench.datasets.formats import FORMATS, read_episodes
from qdepth_bench.models.preprocessing import images_to_model
from qdepth_bench.models.qdepth.checkpoint import NormStats
from qdepth_bench.models.qdepth.config import QDepthConfig
from qdepth_bench.models.qdepth.model import Batch
from qdepth_bench.models.qdepth.tokenizer import FolderTokenizer, HashWordTokenizer
from qdepth_bench.train.draws import sample_picks
from qdepth_bench.train.recipe import Recipe


def read_dataset(recipe: Recipe, image_size: int = 224) -> list[Episode]:
    """Every episode of the recipe's data, with depth and codes attached where the cache has them."""
    fmt = recipe.data.get("format", "libero_hdf5")
    cameras = tuple(recipe.data.get("cameras", ["main"]))
    keys = {k: tuple(v) for k, v in recipe.data.get("keys", {}).items()}
    episodes: list[Episode] = []
    for path in recipe.data_paths():
        if fmt not in FORMATS:
            raise UserError(f"recipe {recipe.name}: data.format must be {', '.join(FORMATS)} (got {fmt!r}).")
        found = list(read_episodes(path, fmt, image_size, cameras, keys, recipe.data.get("layout", "bridge")))
        cache = depth_cache.cache_path(path)
        done = depth_cache.done_demos(cache)
        for episode in found:
            demo = episode.source.rsplit(":", 1)[-1]
            if demo in done:
                episode.depth = depth_cache.read_relative(cache, demo)
                episode.depth_codes = depth_cache.read_codes(cache, demo)
        episodes += found
    if not episodes:
        raise UserError(f"recipe {recipe.name}: the data has no episodes.")
    return episodes


def norm_stats(episodes: list[Episode]) -> NormStats:
    return NormStats.from_data(
        np.concatenate([e.state for e in episodes]), np.concatenate([e.actions for e in episodes])
    )


class SampleSource:
    """Random training samples (frame + action chunk) drawn reproducibly: which sample a row of a step holds
    depends only on (seed, step, row) (`train.draws`), so a resumed run sees the same batches as an
    uninterrupted one and any number of ranks together see the same global batch."""

    def __init__(
        self,
        episodes: list[Episode],
        config: QDepthConfig,
        stats: NormStats,
        tokenizer: HashWordTokenizer | FolderTokenizer,
        seed: int,
    ) -> None:
        self.episodes, self.config, self.stats, self.tokenizer = episodes, config, stats, tokenizer
        self.seed = seed
        self.index = [(e, t) for e, episode in enumerate(episodes) for t in range(len(episode))]
        if config.has_depth:
            target = "depth_codes" if config.depth_target == "tokens" else "depth"
            missing = [e.source for e in episodes if getattr(e, target) is None]
            if missing:
                fix = "qdepth-bench depth encode" if target == "depth_codes" else "qdepth-bench depth annotate"
                raise UserError(
                    f"{len(missing)} episodes have no {target.replace('_', ' ')} (e.g. {missing[0]}); "
                    f"run `{fix}` on the data first."
                )

    def batch(self, step: int, rows: Sequence[int]) -> Batch:
        """The samples of some rows of a step's global batch (see `train.draws.rank_rows`)."""
        picks = sample_picks(self.seed, step, rows, len(self.index))
        samples = [sample_at(self.episodes[self.index[i][0]], self.index[i][1], self.config.chunk_size) for i in picks]
        images = images_to_model(np.stack([s.images["main"] for s in samples]))
        tokens, mask = self.tokenizer([s.instruction for s in samples])
        state = self.stats.normalize_state(np.stack([s.state for s in samples]))
        actions = self.stats.normalize_actions(np.stack([s.actions for s in samples]))
        codes = depth = None
        if self.config.has_depth and self.config.depth_target == "tokens":
            codes = torch.from_numpy(np.stack([_present(s.depth_codes) for s in samples]).astype(np.int64))
        elif self.config.has_depth:
            depth = torch.from_numpy(np.stack([_present(s.depth) for s in samples]))
        return Batch(
            images,
            torch.from_numpy(tokens),
            torch.from_numpy(mask),
            torch.from_numpy(state).float(),
            torch.from_numpy(actions).float(),
            codes,
            depth,
        )


def dataset_dims(episodes: list[Episode]) -> tuple[int, int]:
    return episodes[0].state.shape[1], episodes[0].actions.shape[1]


def depth_frames(paths: list[Path]) -> np.ndarray:
    """All annotated relative depth frames of some datasets, (N, H, W) uint8 (for the VQ-VAE)."""
    import h5py

    frames = []
    for path in paths:
        cache = depth_cache.cache_path(path)
        if not cache.exists():
            raise UserError(f"{path} has no depth annotation; run `qdepth-bench depth annotate {path}` first.")
        with h5py.File(cache, "r") as f:
            frames += [f[demo]["relative"][()] for demo in f if "relative" in f[demo]]
    if not frames:
        raise UserError("no annotated depth frames in the recipe's data.")
    return np.concatenate(frames)


def _present(value: np.ndarray | None) -> np.ndarray:
    """A depth target the constructor checked is there."""
    if value is None:
        raise ValueError("a sample has no depth target")
    return value
