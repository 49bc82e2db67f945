"""Depth annotation of demonstrations, cached next to the dataset (`<file>.depth.h5`).

Two sources:
  sim    the simulator's ground truth: each recorded MuJoCo state is restored in the task's LIBERO env and
         the main camera's depth rendered, converted to metres and rotated/resized like the frames;
  model  a monocular estimator (Depth Anything family) from a local model folder through transformers'
         depth-estimation pipeline, for data without simulator states.

Every frame becomes relative depth the same way: clipped to its 1st-99th percentiles and scaled to [0, 1]
(0 = near, 1 = far; an estimator's inverse depth is flipped to match), stored as uint8 with the metre range
per frame (NaN for estimates, which have no metric scale). The cache has one group per demo; annotating
again skips demos already done, so an interrupted annotation resumes. The same cache later holds the
VQ-VAE codes of each frame (`qdepth-bench depth encode`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.imaging import resize_bilinear
from qdepth_bench.datasets.episode import Episode

#: (demo name, factory of its frames), each frame (depth or inverse depth, is_inverse)
Frames = Callable[[], Iterator[tuple[np.ndarray, bool]]]
FrameSource = Callable[[], Iterator[tuple[str, Frames]]]


def cache_path(dataset: Path) -> Path:
    return dataset.with_name(dataset.name + ".depth.h5") if dataset.is_file() else dataset / "depth.h5"


def to_relative(depth: np.ndarray, inverse: bool = False) -> tuple[np.ndarray, tuple[float, float]]:
    """(H, W) depth (or inverse depth) -> uint8 relative depth (0 near .. 255 far) and the clip range."""
    lo, hi = np.percentile(depth, [1, 99])
    scaled = np.clip((depth - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if inverse:
        scaled = 1.0 - scaled
    return np.round(scaled * 255).astype(np.uint8), (float(lo), float(hi))


def done_demos(cache: Path) -> set[str]:
    import h5py

    if not cache.exists():
        return set()
    with h5py.File(cache, "r") as f:
        return {name for name in f if "relative" in f[name]}


def write_demo(cache: Path, demo: str, relative: np.ndarray, ranges: np.ndarray, source: str) -> None:
    import h5py

    with h5py.File(cache, "a") as f:
        if demo in f:
            del f[demo]
        group = f.create_group(demo)
        group.create_dataset("relative", data=relative, compression="gzip", compression_opts=4)
        group.create_dataset("range_m", data=ranges)
        group.attrs["source"] = source


def read_relative(cache: Path, demo: str) -> np.ndarray:
    """(T, H, W) float32 relative depth in [0, 1] of one demo."""
    import h5py

    with h5py.File(cache, "r") as f:
        if demo not in f:
            raise UserError(f"{cache} has no depth for {demo}; run `qdepth-bench depth annotate` first.")
        return f[demo]["relative"][()].astype(np.float32) / 255.0


def write_codes(cache: Path, demo: str, codes: np.ndarray, vqvae_hash: str) -> None:
    import h5py

    with h5py.File(cache, "a") as f:
        group = f[demo]
        if "codes" in group:
            del group["codes"]
        group.create_dataset("codes", data=codes.astype(np.uint8 if codes.max() < 256 else np.int32))
        group.attrs["vqvae"] = vqvae_hash


def read_codes(cache: Path, demo: str) -> np.ndarray | None:
    import h5py

    if not cache.exists():
        return None
    with h5py.File(cache, "r") as f:
        return f[demo]["codes"][()].astype(np.int64) if demo in f and "codes" in f[demo] else None


def annotate(
    dataset: Path, frames: FrameSource, source: str, on_demo: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Annotate every demo not yet in the cache. `frames()` yields (demo name, frame iterator factory);
    each frame is (depth or inverse depth, is_inverse)."""
    cache = cache_path(dataset)
    done = done_demos(cache)
    counts = {"annotated": 0, "skipped": 0, "frames": 0}
    for demo, make_frames in frames():
        if demo in done:
            counts["skipped"] += 1
            continue
        pairs = [to_relative(depth, inverse) for depth, inverse in make_frames()]
        relative = np.stack([p[0] for p in pairs])
        ranges = np.array([p[1] if source == "sim" else (np.nan, np.nan) for p in pairs], dtype=np.float32)
        write_demo(cache, demo, relative, ranges, source)
        counts["annotated"] += 1
        counts["frames"] += len(relative)
        if on_demo is not None:
            on_demo(demo, len(relative))
    return counts


def sim_frames(dataset: Path, suite: str | None, image_size: int = 224) -> FrameSource:
    """Frame source for LIBERO HDF5 files: restore each recorded state, render the main camera's depth."""
    import h5py

    from qdepth_bench.core.policy import PolicyRequirements
    from qdepth_bench.datasets.libero_hdf5 import demo_names
    from qdepth_bench.registry.sims import make_backend
    from qdepth_bench.registry.suites import suite_registry

    with h5py.File(dataset, "r") as f:
        bddl = str(f["data"].attrs.get("bddl_file_name", ""))
    registry = suite_registry()
    candidates = [registry.suites[suite]] if suite else [s for s in registry.suites.values() if s.family == "libero"]
    for spec in candidates:
        backend = make_backend(spec)
        task_id = backend.task_id_of_scene(bddl) if bddl else None
        if task_id is not None:
            break
    else:
        raise UserError(
            f"{dataset}: its BDDL file '{bddl}' matches no LIBERO task; pass --suite, or annotate with --source model."
        )
    env = backend.make_env(task_id, PolicyRequirements(cameras=("main",), image_size=image_size, depth=True))

    def demos() -> Iterator[tuple[str, Frames]]:
        try:
            for name in demo_names(dataset):
                with h5py.File(dataset, "r") as f:
                    if "states" not in f["data"][name]:
                        raise UserError(f"{dataset}:{name} has no simulator states; annotate with --source model.")
                    states = f["data"][name]["states"][()]
                yield name, functools.partial(_restored_depth, env, states)
        finally:
            env.close()

    return demos


def _restored_depth(env: Any, states: np.ndarray) -> Iterator[tuple[np.ndarray, bool]]:
    """The main camera's metric depth at each recorded simulator state."""
    for state in states:
        yield env.restore(state).depth["main"][0], False


def model_frames(episodes: Callable[[], Iterator[Episode]], model_folder: Path) -> FrameSource:
    """Frame source for any dataset: a depth-estimation model from a local folder on the main camera."""
    from PIL import Image

    if not (model_folder / "config.json").is_file():
        raise UserError(
            f"--model {model_folder} is not a transformers model folder (no config.json); download a "
            "Depth Anything model (e.g. depth-anything/Depth-Anything-V2-Small-hf) there first."
        )
    from transformers import pipeline

    try:
        estimator = pipeline("depth-estimation", model=str(model_folder), device="cpu")
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load a depth-estimation model from {model_folder} ({exc}).") from None

    def estimate(frames: np.ndarray) -> Iterator[tuple[np.ndarray, bool]]:
        for frame in frames:
            try:
                out = estimator(Image.fromarray(frame))
            except RuntimeError as exc:
                raise UserError(
                    f"the depth model in {model_folder} fails on a {frame.shape} frame ({exc}); "
                    "is it a complete depth-estimation model?"
                ) from None
            disparity = np.asarray(out["predicted_depth"], dtype=np.float32).squeeze()
            if disparity.shape != frame.shape[:2]:
                disparity = resize_bilinear(disparity, (frame.shape[1], frame.shape[0]))
            yield disparity, True  # Depth Anything predicts relative inverse depth

    def demos() -> Iterator[tuple[str, Frames]]:
        for episode in episodes():
            yield episode.source.rsplit(":", 1)[-1], functools.partial(estimate, episode.images["main"])

    return demos
