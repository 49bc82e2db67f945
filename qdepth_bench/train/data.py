"""The training data stream: a recipe's datasets read on demand, shuffled, sharded and batched in DataLoader
worker processes, resumable at any batch.

Only the index (episode keys and lengths) and the low-dimensional arrays (for the normalisation statistics and
the data fingerprint) are read up front; frames and depth targets are read one episode at a time when the
stream reaches it, so a training process's memory does not grow with the dataset.

The order of an epoch is a pure function of (seed, epoch, streams), never of how many ranks or workers read it:
  1. the epoch's episodes: every episode of a dataset of weight 1; weight 2 every episode twice; weight 0.5 a
     seeded half of them (Open-X style mixtures, `data.datasets[].weight`);
  2. those episodes in a seeded order, dealt to `train.streams` streams, each to the stream with the fewest
     frames so far (streams differ by at most one episode's frames);
  3. each stream's frames pass a shuffle buffer of `data.shuffle_buffer` frames (drawn on frame indices, so
     the order is known before any frame is decoded).
Every frame of an epoch is thus seen exactly once. Streams run from one epoch into the next without waiting for
each other. A step's global batch is made of blocks of `batch_size` samples: block B of the run is the next
block of stream B mod streams, and rank r of W trains the blocks B = r (mod W) (the rows `train.draws.rank_rows`
gives it), so it reads only the streams v = r (mod W), and its DataLoader workers split those streams between
them. The global batch of a step is therefore the same on any number of ranks and workers that divides the
streams, and a resumed training (rank batch k = step x accumulation) starts each stream where it stopped.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import file_hash
from qdepth_bench.datasets import depth as depth_cache
from qdepth_bench.datasets.formats import DEFAULT_ROTATION, FORMATS, EpisodeSource, open_source
from qdepth_bench.models.preprocessing import images_to_model
from qdepth_bench.models.qdepth.checkpoint import NormStats
from qdepth_bench.models.qdepth.config import QDepthConfig
from qdepth_bench.models.qdepth.model import Batch
from qdepth_bench.models.qdepth.tokenizer import FolderTokenizer, HashWordTokenizer
from qdepth_bench.train.recipe import Recipe

DEFAULT_SHUFFLE_BUFFER = 1000


@dataclass(frozen=True)
class Entry:
    """One episode of the index: which dataset (`spec`) and file (`source`) it is in, its key and length."""

    spec: int
    source: int
    key: str
    length: int


@dataclass
class TrainingData:
    """A recipe's datasets, opened but not decoded."""

    specs: list[dict[str, Any]]  # the recipe's dataset entries, defaults filled in (recorded with checkpoints)
    sources: list[EpisodeSource]
    entries: list[Entry]
    stats: list[NormStats]  # per dataset (spec): mixtures normalise each action space on its own
    fingerprint: str
    dims: tuple[int, int]  # (state, action)

    def set_image_size(self, size: int) -> None:
        """Frames at the model's input size (known once the model is built, after the data gave its dims)."""
        for spec in self.specs:
            spec["image_size"] = size
        for source in self.sources:
            source.image_size = size

    @property
    def frames(self) -> int:
        return sum(e.length for e in self.entries)

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records about its data: each dataset's format, conventions and size."""
        return {
            "datasets": self.specs,
            "stats": [asdict(s) for s in self.stats],  # per dataset: what a mixture member is normalised with
            "episodes": len(self.entries),
            "frames": self.frames,
            "fingerprint": self.fingerprint,
        }


def dataset_specs(recipe: Recipe, image_size: int) -> list[dict[str, Any]]:
    """The recipe's datasets: `data.datasets` (a mixture), else `data` itself as the one dataset. Shared
    settings (cameras, resize, shuffle buffer) come from `data`; each entry may override them."""
    shared = {k: v for k, v in recipe.data.items() if k != "datasets"}
    listed = recipe.data.get("datasets") or [shared]
    specs = []
    for i, entry in enumerate(listed):
        spec = {**shared, **entry}
        fmt = spec.get("format", "libero_hdf5")
        if fmt not in FORMATS:
            raise UserError(f"recipe {recipe.name}: data format must be {', '.join(FORMATS)} (got {fmt!r}).")
        weight = float(spec.get("weight", 1.0))
        if weight <= 0:
            raise UserError(f"recipe {recipe.name}: dataset {i} has weight {weight}; weights must be positive.")
        specs.append(
            {
                "format": fmt,
                "paths": [str(p) for p in recipe.glob_paths(spec.get("paths", []))],
                "weight": weight,
                "cameras": list(spec.get("cameras", ["main"])),
                "keys": {k: list(v) for k, v in spec.get("keys", {}).items()},
                "layout": spec.get("layout", "bridge"),
                "rotation": int(spec.get("rotation", DEFAULT_ROTATION[fmt])),
                "image_size": image_size,
                "resize": spec.get("resize", "bilinear"),
            }
        )
    return specs


def open_training_data(recipe: Recipe, image_size: int = 224) -> TrainingData:
    """Index the recipe's datasets and read their low-dimensional arrays (not their frames)."""
    specs = dataset_specs(recipe, image_size)
    sources: list[EpisodeSource] = []
    entries: list[Entry] = []
    stats: list[NormStats] = []
    digest = hashlib.sha256()
    dims: tuple[int, int] | None = None
    for s, spec in enumerate(specs):
        states, actions = [], []
        for path in spec["paths"]:
            source = open_source(
                Path(path),
                spec["format"],
                image_size,
                tuple(spec["cameras"]),
                {k: tuple(v) for k, v in spec["keys"].items()},
                spec["layout"],
                spec["rotation"],
                spec["resize"],
            )
            for key, length in source.episodes():
                state, action = source.lowdim(key)
                if len(state) != length or len(action) != length:
                    raise UserError(
                        f"{path}:{key} has {len(state)} states and {len(action)} actions for {length} frames."
                    )
                if dims is not None and (state.shape[1], action.shape[1]) != dims:
                    raise UserError(
                        f"{path}:{key} has state/action dims {state.shape[1]}/{action.shape[1]}, the recipe's first "
                        f"dataset {dims[0]}/{dims[1]}; a mixture needs one layout (set data.datasets[].keys)."
                    )
                dims = (state.shape[1], action.shape[1])
                digest.update(f"{s}:{length}:{source.instruction(key)}".encode())
                digest.update(state.tobytes() + action.tobytes())
                states.append(state)
                actions.append(action)
                entries.append(Entry(s, len(sources), key, length))
            digest.update(str(_size_of(Path(path))).encode())
            sources.append(source)
        if not states:
            raise UserError(f"recipe {recipe.name}: dataset {s} ({', '.join(spec['paths'])}) has no episodes.")
        stats.append(NormStats.from_data(np.concatenate(states), np.concatenate(actions)))
    assert dims is not None  # every spec has episodes (checked above)
    return TrainingData(specs, sources, entries, stats, digest.hexdigest()[:16], dims)


def _size_of(path: Path) -> int:
    """Bytes of a dataset and its depth cache (a cheap stand-in for hashing every frame)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    cache = depth_cache.cache_path(path)
    return sum(p.stat().st_size for p in files) + (cache.stat().st_size if cache.is_file() and path.is_file() else 0)


def _check_depth(data: TrainingData, target: str, vqvae_hash: str | None, estimator: str | None) -> None:
    """Every episode has its depth target in the cache beside its dataset, with one entry per frame, made
    the way the recipe says: its codes by the recipe's VQ-VAE (`vqvae_hash`), its depth by the estimator the
    recipe names (`data.depth_estimator`, when it names one)."""
    import h5py

    field = "codes" if target == "depth_codes" else "relative"
    fix = "qdepth-bench depth encode" if target == "depth_codes" else "qdepth-bench depth annotate"
    for index, source in enumerate(data.sources):
        cache = depth_cache.cache_path(source.path)
        lengths = {e.key: e.length for e in data.entries if e.source == index}
        found: dict[str, int] = {}
        coded_by: dict[str, str] = {}
        if cache.is_file():
            with h5py.File(cache, "r") as f:
                found = {k: int(f[k][field].shape[0]) for k in f if field in f[k]}
                coded_by = {k: str(f[k].attrs.get("vqvae", "")) for k in f if field in f[k]}
        missing = [k for k in lengths if k not in found]
        if missing:
            raise UserError(
                f"{len(missing)} episodes of {source.path} have no {target.replace('_', ' ')} (e.g. {missing[0]}); "
                f"run `{fix} {source.path}` first."
            )
        wrong = [k for k, n in lengths.items() if found[k] != n]
        if wrong:
            raise UserError(
                f"{cache} does not match {source.path}: {wrong[0]} has {found[wrong[0]]} depth frames for "
                f"{lengths[wrong[0]]} frames; delete the cache and run "
                f"`qdepth-bench depth annotate {source.path}` again."
            )
        other = [k for k in lengths if target == "depth_codes" and vqvae_hash and coded_by[k] != vqvae_hash]
        if other:
            raise UserError(
                f"the depth codes of {source.path} ({other[0]}) were made by another VQ-VAE ({coded_by[other[0]]}) "
                f"than the recipe's ({vqvae_hash}); run `qdepth-bench depth encode {source.path} --vqvae FOLDER` "
                "with the recipe's vqvae folder."
            )
        settings = depth_cache.read_settings(cache) if estimator else None
        if estimator and (settings is None or settings.estimator != estimator):
            made = settings.estimator if settings is not None else "an unrecorded estimator"
            raise UserError(
                f"the depth of {source.path} was made by {made}, the recipe names {estimator} "
                f"(data.depth_estimator); annotate it with `qdepth-bench depth annotate {source.path} --source "
                f"{estimator}` into a fresh sidecar, or change the recipe."
            )


def epoch_episodes(data: TrainingData, seed: int, epoch: int) -> list[int]:
    """The entries of an epoch in their seeded order: weight w gives each episode floor(w) times and a
    seeded fraction w - floor(w) of the dataset's episodes once more."""
    rng = np.random.default_rng([seed, epoch, 0])
    chosen: list[int] = []
    for s, spec in enumerate(data.specs):
        own = [i for i, e in enumerate(data.entries) if e.spec == s]
        whole, part = divmod(spec["weight"], 1.0)
        chosen += own * int(whole)
        extra = round(part * len(own))
        chosen += [own[i] for i in sorted(rng.permutation(len(own))[:extra])]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def epoch_frames(data: TrainingData, seed: int) -> int:
    """Frames in one epoch of the stream (its first: a fractional weight's seeded share may differ by an
    episode between epochs): what a recipe's `train.epochs` counts in."""
    return sum(data.entries[i].length for i in epoch_episodes(data, seed, 0))


def deal(data: TrainingData, order: list[int], streams: int) -> list[list[int]]:
    """Episodes to streams in order, each to the stream with the fewest frames so far (lowest index on ties)."""
    dealt: list[list[int]] = [[] for _ in range(streams)]
    frames = [0] * streams
    for entry in order:
        target = frames.index(min(frames))
        dealt[target].append(entry)
        frames[target] += data.entries[entry].length
    return dealt


def shuffled(length: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """The order in which a shuffle buffer of `buffer` slots emits the positions 0..length-1 fed to it in order:
    each position leaves the buffer at most `buffer` - 1 positions after it entered (what bounds memory)."""
    buffer = max(1, min(buffer, length))
    slots = list(range(buffer))
    out = np.empty(length, dtype=np.int64)
    picks = rng.integers(0, buffer, size=length - buffer)
    for n, pick in enumerate(picks):
        out[n] = slots[pick]
        slots[pick] = buffer + n
    rng.shuffle(slots)
    out[length - buffer :] = slots
    return out


class SampleStream(torch.utils.data.IterableDataset):
    """One rank's batches, made in DataLoader workers (or in the main process with 0 workers)."""

    def __init__(
        self,
        data: TrainingData,
        config: QDepthConfig,
        tokenizer: HashWordTokenizer | FolderTokenizer,
        batch_size: int,
        rank: int,
        world: int,
        streams: int,
        workers: int,
        seed: int,
        start_batch: int,
        shuffle_buffer: int,
    ) -> None:
        super().__init__()
        self.data, self.config, self.tokenizer = data, config, tokenizer
        self.batch_size, self.rank, self.world, self.streams = batch_size, rank, world, streams
        self.workers = max(workers, 1)  # makers of batches: the DataLoader's workers, or the main process
        self.seed, self.start_batch, self.shuffle_buffer = seed, start_batch, shuffle_buffer
        self.target = None
        if config.has_depth:
            self.target = "depth_codes" if config.depth_target == "tokens" else "depth"

    @property
    def rank_streams(self) -> int:
        return self.streams // self.world

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Worker i of n makes the rank's batches start+i, start+i+n, ... (the DataLoader takes them in turn,
        so they arrive in order). The rank's batch k is block k // s of its stream k mod s (s: the rank's
        streams, a multiple of n), so each worker reads whole streams of its own."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.workers:
            raise RuntimeError(f"the stream was planned for {self.workers} workers, the DataLoader has {workers}")
        open_streams: dict[int, Iterator[dict[str, Any]]] = {}
        for batch in itertools.count(self.start_batch + worker, workers):
            stream = batch % self.rank_streams
            if stream not in open_streams:
                open_streams[stream] = self.samples(stream, (batch // self.rank_streams) * self.batch_size)
            samples = open_streams[stream]
            yield self.collate([next(samples) for _ in range(self.batch_size)])

    def stream_id(self, stream: int) -> int:
        """The run's stream that is this rank's `stream`-th (rank r reads the streams r, r + W, r + 2W, ...)."""
        return self.rank + self.world * stream

    def samples(self, stream: int, skip: int) -> Iterator[dict[str, Any]]:
        """A stream's samples from its `skip`-th on, epoch after epoch."""
        for epoch in itertools.count():
            mine = deal(self.data, epoch_episodes(self.data, self.seed, epoch), self.streams)[self.stream_id(stream)]
            length = sum(self.data.entries[e].length for e in mine)
            if skip >= length:
                skip -= length
                continue
            yield from self.epoch_samples(mine, epoch, stream, skip)
            skip = 0

    def epoch_samples(self, mine: list[int], epoch: int, stream: int, skip: int) -> Iterator[dict[str, Any]]:
        """One epoch of a stream, from its `skip`-th sample: episodes decoded as the buffer reaches them, each
        frame kept until it is emitted (at most shuffle_buffer + one episode's frames held)."""
        starts = np.cumsum([0] + [self.data.entries[e].length for e in mine])
        order = shuffled(
            int(starts[-1]), self.shuffle_buffer, np.random.default_rng([self.seed, epoch, self.stream_id(stream), 1])
        )
        emitted = set(order[:skip].tolist())
        held: dict[int, dict[str, Any]] = {}
        loaded = 0  # episodes of `mine` decoded so far
        for position in order[skip:]:
            while position not in held:
                for t, sample in enumerate(self.episode_samples(mine[loaded], epoch)):
                    if int(starts[loaded]) + t not in emitted:
                        held[int(starts[loaded]) + t] = sample
                loaded += 1
            yield held.pop(int(position))

    def episode_samples(self, index: int, epoch: int) -> list[dict[str, Any]]:
        """Every frame of one episode as a sample (own copies, so the decoded episode is freed at once)."""
        entry = self.data.entries[index]
        source = self.data.sources[entry.source]
        episode = source.episode(entry.key)
        stats = self.data.stats[entry.spec]
        state = np.zeros((entry.length, self.config.state_dim), np.float32)  # zeros past the data's width
        state[:, : episode.state.shape[1]] = stats.normalize_state(episode.state)
        actions = stats.normalize_actions(episode.actions).astype(np.float32)
        target = None
        if self.target == "depth":
            target = depth_cache.read_relative(depth_cache.cache_path(source.path), entry.key)
        elif self.target == "depth_codes":
            target = depth_cache.read_codes(depth_cache.cache_path(source.path), entry.key)
        chunk = self.config.chunk_size
        samples = []
        for t in range(entry.length):
            index_ = np.minimum(np.arange(t, t + chunk), entry.length - 1)
            samples.append(
                {
                    "image": episode.images["main"][t].copy(),
                    "instruction": episode.instruction,
                    "state": state[t].copy(),
                    "actions": actions[index_],
                    "target": None if target is None else target[t].copy(),
                    "epoch": epoch,
                    "id": (epoch, index, t),
                }
            )
        return samples

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        tokens, mask = self.tokenizer([s["instruction"] for s in samples])
        batch: dict[str, Any] = {
            "images": torch.from_numpy(np.stack([s["image"] for s in samples])),
            "tokens": torch.from_numpy(tokens),
            "token_mask": torch.from_numpy(mask),
            "state": torch.from_numpy(np.stack([s["state"] for s in samples])),
            "actions": torch.from_numpy(np.stack([s["actions"] for s in samples])),
            "epoch": max(s["epoch"] for s in samples),
            "ids": [s["id"] for s in samples],
        }
        if self.target is not None:
            target = np.stack([s["target"] for s in samples])
            batch[self.target] = torch.from_numpy(
                target.astype(np.int64 if self.target == "depth_codes" else np.float32)
            )
        return batch


class TrainLoader:
    """A rank's batches with the time the training waited for each, and the position a checkpoint keeps."""

    def __init__(self, stream: SampleStream, workers: int, prefetch: int, device: torch.device | str) -> None:
        self.stream, self.device = stream, device
        self.batches = stream.start_batch
        self.epoch = 0
        self.wait_s = 0.0
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            prefetch_factor=prefetch if workers else None,
            persistent_workers=False,
            # the loader draws its workers' base seed from this generator, not from torch's global one: the
            # training's flow noise then continues after a resume exactly as in an uninterrupted run
            generator=torch.Generator().manual_seed(stream.seed),
        )
        self._batches = iter(loader)
        self.last_ids: list[tuple[int, int, int]] = []  # (epoch, entry, frame) of the last batch's samples

    def next(self) -> Batch:
        """The next batch, on the device; the wait for it is added to `wait_s`."""
        started = time.perf_counter()
        raw = next(self._batches)
        self.wait_s += time.perf_counter() - started
        self.batches += 1
        self.epoch, self.last_ids = raw["epoch"], raw["ids"]
        depth_codes, depth = raw.get("depth_codes"), raw.get("depth")
        return Batch(
            images_to_model(raw["images"].numpy(), self.device),
            raw["tokens"].to(self.device),
            raw["token_mask"].to(self.device),
            raw["state"].float().to(self.device),
            raw["actions"].float().to(self.device),
            None if depth_codes is None else depth_codes.to(self.device),
            None if depth is None else depth.to(self.device),
        )

    def data_describe(self) -> dict[str, Any]:
        return self.stream.data.describe()

    def take_wait(self) -> float:
        """Seconds spent waiting for data since the last call."""
        waited, self.wait_s = self.wait_s, 0.0
        return waited

    def position(self) -> dict[str, int]:
        """What a checkpoint keeps to resume the stream: the batches taken and what orders the data."""
        s = self.stream
        return {
            "batches": self.batches,
            "world": s.world,
            "streams": s.streams,
            "batch_size": s.batch_size,
            "seed": s.seed,
            "shuffle_buffer": s.shuffle_buffer,
        }

    def close(self) -> None:
        """Stop the worker processes."""
        del self._batches


def make_train_loader(
    recipe: Recipe,
    data: TrainingData,
    config: QDepthConfig,
    tokenizer: HashWordTokenizer | FolderTokenizer,
    rank: int = 0,
    world: int = 1,
    seed: int | None = None,
    position: dict[str, int] | None = None,
    device: torch.device | str = "cpu",
) -> TrainLoader:
    """The batches of one rank (`recipe.train.batch_size` each), continuing from a checkpoint's `position`
    (None: from the start). The data's order depends on the streams (`train.streams`, by default ranks x
    workers), the batch size, the seed and the shuffle buffer: a position made with others is refused with the
    setting to restore. Ranks and workers may change between runs as long as they divide the streams."""
    settings = recipe.train
    seed = settings.seed if seed is None else seed
    makers = max(settings.workers, 1)
    streams = settings.streams or world * makers
    if position is not None and "streams" in position and not settings.streams:
        streams = int(position["streams"])  # the checkpoint's streams, whatever ranks and workers now read them
    if streams % (world * makers):
        raise UserError(
            f"recipe {recipe.name}: train.streams {streams} must be a multiple of {world} ranks x {makers} "
            f"data workers = {world * makers}; set train.streams to one (it fixes the data order)."
        )
    buffer = int(recipe.data.get("shuffle_buffer", DEFAULT_SHUFFLE_BUFFER))
    if len(data.entries) < streams:
        raise UserError(
            f"recipe {recipe.name}: {len(data.entries)} episodes cannot feed {streams} data streams ({world} ranks "
            "x train.workers, or train.streams); lower train.workers or train.streams."
        )
    data.set_image_size(config.vision.image_size)
    if config.has_depth:
        target = "depth_codes" if config.depth_target == "tokens" else "depth"
        vqvae = Path(recipe.vqvae) / "model.safetensors" if recipe.vqvae else None
        vqvae_hash = file_hash(vqvae) if target == "depth_codes" and vqvae is not None and vqvae.is_file() else None
        _check_depth(data, target, vqvae_hash, recipe.data.get("depth_estimator"))
    now = {"streams": streams, "batch_size": settings.batch_size, "seed": seed, "shuffle_buffer": buffer}
    start = 0
    if position is not None:
        changed = [k for k, v in now.items() if k in position and position[k] != v]
        if changed:
            name = {"streams": "train.streams", "batch_size": "train.batch_size", "seed": "train.seed"}
            key = changed[0]
            raise UserError(
                f"recipe {recipe.name}: the checkpoint's data stream was made with {key}={position[key]} "
                f"(now {now[key]}); "
                f"resume with {name.get(key, key)} = {position[key]} so it continues in the same order."
            )
        # the run's blocks taken so far, dealt again over this run's ranks (see the module docstring)
        start = int(position["batches"]) * int(position.get("world", world)) // world
    stream = SampleStream(
        data, config, tokenizer, settings.batch_size, rank, world, streams, settings.workers, seed, start, buffer
    )
    return TrainLoader(stream, settings.workers, settings.prefetch, device)


class DepthFrames:
    """Every annotated relative depth frame of some datasets, (N, H, W) uint8, indexed up front and read from
    the depth caches when a batch asks for them (for the VQ-VAE): a full-size dataset's frames do not fit in
    memory (about 50 KB each at 224 px: a million frames are 50 GB)."""

    def __init__(self, paths: list[Path]) -> None:
        import h5py

        self.parts: list[tuple[Path, str]] = []  # (cache, episode), in index order
        self.size = 0  # frames are size x size
        lengths = []
        for path in paths:
            cache = depth_cache.cache_path(path)
            if not cache.exists():
                raise UserError(f"{path} has no depth annotation; run `qdepth-bench depth annotate {path}` first.")
            with h5py.File(cache, "r") as f:
                for demo in f:
                    if "relative" in f[demo]:
                        self.parts.append((cache, demo))
                        lengths.append(int(f[demo]["relative"].shape[0]))
                        self.size = int(f[demo]["relative"].shape[1])
        if not self.parts:
            raise UserError("no annotated depth frames in the recipe's data.")
        self.starts = np.cumsum([0, *lengths])
        self._files: dict[Path, Any] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, indices: np.ndarray) -> np.ndarray:
        """The frames at these positions, in their order."""
        import h5py

        out = np.empty((len(indices), self.size, self.size), np.uint8)
        parts = np.searchsorted(self.starts, indices, side="right") - 1
        for row, (index, part) in enumerate(zip(indices, parts, strict=True)):
            cache, demo = self.parts[part]
            if cache not in self._files:
                self._files[cache] = h5py.File(cache, "r")
            out[row] = self._files[cache][demo]["relative"][int(index - self.starts[part])]
        return out
