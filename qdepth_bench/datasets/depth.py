"""Depth labels of demonstrations, in a sidecar beside the dataset (`<file>.depth.h5`, or `depth.h5` inside
a dataset folder), one group per episode holding one uint8 frame per dataset frame.

Three estimators:
  sim    the simulator's ground truth: each recorded simulator state is restored and the main camera's depth
         rendered (demonstration files written by a simulator that serves depth and records states);
  vida   Video-Depth-Anything on the main camera's frames of each episode as one video (the paper's labels):
         overlapping windows aligned in scale and shift, so depth is consistent across the episode;
  model  a Depth-Anything(-V2) model folder through transformers' depth-estimation pipeline, frame by frame.

What "relative depth" means here (the depth VQ-VAE's input): an affine-invariant map of depth, 0 = near and
1 = far, stored as uint8. Estimators give inverse depth up to an unknown scale and shift; it is clipped to its
1st-99th percentiles, scaled to [0, 1] and flipped (1 - x). Simulator depth in metres is clipped and scaled
the same way without the flip. The percentiles are taken either over the whole episode (normalisation
"episode", the default: one affine map per episode, so frame-to-frame changes of the estimate survive) or over
each frame alone ("frame": every frame spans the full range, which removes the estimator's temporal
consistency). The sidecar records the estimator, the checkpoint's hash and the normalisation, refuses to mix
settings, and writes each episode when it is complete, so a killed annotation resumes at the next episode.
The same sidecar later holds the VQ-VAE codes of each frame (`qdepth-bench depth encode`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import file_hash, stable_hash
from qdepth_bench.core.imaging import resize_bilinear
from qdepth_bench.datasets.episode import Episode

ESTIMATORS = ("sim", "vida", "model")
NORMALISATIONS = ("episode", "frame")

#: (episode name, factory of its depth): the factory returns ((T, H, W) depth or inverse depth, is_inverse)
Frames = Callable[[], tuple[np.ndarray, bool]]
FrameSource = Callable[[], Iterator[tuple[str, Frames]]]


@dataclass(frozen=True)
class DepthSettings:
    """What made a sidecar's depth: every episode in one sidecar was made the same way."""

    estimator: str
    checkpoint: str  # hash of the checkpoint file or model folder's weights; "" for simulator depth
    normalisation: str = "episode"

    def check(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise UserError(f"depth estimator must be one of {', '.join(ESTIMATORS)} (got {self.estimator!r}).")
        if self.normalisation not in NORMALISATIONS:
            raise UserError(f"--normalise must be one of {', '.join(NORMALISATIONS)} (got {self.normalisation!r}).")


def cache_path(dataset: Path) -> Path:
    return dataset.with_name(dataset.name + ".depth.h5") if dataset.is_file() else dataset / "depth.h5"


def to_relative(values: np.ndarray, inverse: bool, normalisation: str) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) depth or inverse depth -> uint8 relative depth (0 near .. 255 far) and the (T, 2) clip range,
    the percentiles taken over the episode or per frame (see the module's docstring)."""
    values = values.astype(np.float32, copy=False)
    if normalisation == "episode":
        lo, hi = np.percentile(values, [1, 99])
        ranges = np.tile(np.array([lo, hi], dtype=np.float32), (len(values), 1))
    else:
        ranges = np.percentile(values.reshape(len(values), -1), [1, 99], axis=1).T.astype(np.float32)
    lo_t, hi_t = ranges[:, :1, None], ranges[:, 1:, None]
    scaled = np.clip((values - lo_t) / np.maximum(hi_t - lo_t, 1e-6), 0.0, 1.0)
    if inverse:
        scaled = 1.0 - scaled
    return np.round(scaled * 255).astype(np.uint8), ranges


def read_settings(cache: Path) -> DepthSettings | None:
    """The settings a sidecar was made with (None when there is none yet, or it predates recorded settings)."""
    import h5py

    if not cache.exists():
        return None
    with h5py.File(cache, "r") as f:
        if "estimator" not in f.attrs:
            return None
        return DepthSettings(str(f.attrs["estimator"]), str(f.attrs["checkpoint"]), str(f.attrs["normalisation"]))


def done_demos(cache: Path) -> set[str]:
    import h5py

    if not cache.exists():
        return set()
    with h5py.File(cache, "r") as f:
        return {name for name in f if "relative" in f[name]}


def write_demo(cache: Path, demo: str, relative: np.ndarray, ranges: np.ndarray, source: str) -> None:
    """Write one episode's depth; the file is closed after each episode, so a kill loses at most the episode
    being computed."""
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


def claim(cache: Path, settings: DepthSettings) -> None:
    """Record the settings in a new sidecar, or refuse to add episodes made another way to an existing one."""
    import h5py

    settings.check()
    found = read_settings(cache)
    if found is None and cache.exists() and done_demos(cache):
        raise UserError(f"{cache} holds depth of unrecorded origin; delete it to annotate again.")
    if found is not None and found != settings:
        raise UserError(
            f"{cache} was made by {found.estimator} (checkpoint {found.checkpoint[:12] or '-'}, "
            f"{found.normalisation} normalisation), not {settings.estimator} (checkpoint "
            f"{settings.checkpoint[:12] or '-'}, {settings.normalisation}); delete it or annotate with its settings."
        )
    with h5py.File(cache, "a") as f:
        f.attrs.update(asdict(settings))


def annotate(
    dataset: Path,
    frames: FrameSource,
    settings: DepthSettings,
    on_demo: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Annotate every episode not yet in the sidecar, one episode in memory at a time."""
    cache = cache_path(dataset)
    claim(cache, settings)
    done = done_demos(cache)
    counts = {"annotated": 0, "skipped": 0, "frames": 0}
    for demo, make_depth in frames():
        if demo in done:
            counts["skipped"] += 1
            continue
        values, inverse = make_depth()
        relative, ranges = to_relative(values, inverse, settings.normalisation)
        if settings.estimator != "sim":
            ranges = np.full_like(ranges, np.nan)  # estimates have no metric range
        write_demo(cache, demo, relative, ranges, settings.estimator)
        counts["annotated"] += 1
        counts["frames"] += len(relative)
        if on_demo is not None:
            on_demo(demo, len(relative))
    return counts


def episode_name(episode: Episode) -> str:
    """The sidecar key of an episode: the id its reader gives it (`demo_3`, `episode_12`)."""
    return episode.source.rsplit(":", 1)[-1]


def sim_frames(dataset: Path, suite: str | None, image_size: int = 224) -> FrameSource:
    """Frame source for simulator demonstration files: restore each recorded state, render the main camera's
    depth. The simulator is found by asking each registered one that writes demonstrations and renders depth
    whether it knows the file's scene."""
    import h5py

    from qdepth_bench.core.policy import PolicyRequirements
    from qdepth_bench.datasets.libero_hdf5 import demo_names
    from qdepth_bench.registry.sims import make_backend, simulators
    from qdepth_bench.registry.suites import suite_registry

    with h5py.File(dataset, "r") as f:
        scene = str(f["data"].attrs.get("bddl_file_name", ""))
    registry = suite_registry()
    writers = {name for name in simulators().names() if simulators().get(name).demo_writer}
    candidates = [registry.suites[suite]] if suite else [s for s in registry.suites.values() if s.backend in writers]
    for spec in candidates:
        backend = make_backend(spec)
        task_id = backend.task_id_of_scene(scene) if scene and backend.serves_depth else None
        if task_id is not None:
            break
    else:
        raise UserError(
            f"{dataset}: its scene '{scene}' matches no task of a simulator that renders depth; pass --suite, "
            "or annotate with --estimator vida."
        )
    env = backend.make_env(task_id, PolicyRequirements(cameras=("main",), image_size=image_size, depth=True))

    def demos() -> Iterator[tuple[str, Frames]]:
        try:
            for name in demo_names(dataset):
                with h5py.File(dataset, "r") as f:
                    if "states" not in f["data"][name]:
                        raise UserError(f"{dataset}:{name} has no simulator states; annotate with --estimator vida.")
                    states = f["data"][name]["states"][()]
                yield name, functools.partial(_restored_depth, env, states)
        finally:
            env.close()

    return demos


def _restored_depth(env: Any, states: np.ndarray) -> tuple[np.ndarray, bool]:
    """The main camera's metric depth at each recorded simulator state."""
    return np.stack([env.restore(state).depth["main"][0] for state in states]), False


def vida_frames(
    episodes: Callable[[], Iterator[Episode]],
    model: Any,
    input_size: int = 518,
    batch_windows: int = 1,
    device: str = "cpu",
) -> FrameSource:
    """Frame source for any dataset: Video-Depth-Anything over each episode's main camera as one video
    (half precision on a GPU)."""
    import torch

    from qdepth_bench.models.vida.inference import infer_video

    dtype = torch.float32
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = model.to(device)

    def estimate(frames: np.ndarray) -> tuple[np.ndarray, bool]:
        return infer_video(model, frames, input_size, batch_windows, device, dtype), True

    def demos() -> Iterator[tuple[str, Frames]]:
        for episode in episodes():
            yield episode_name(episode), functools.partial(estimate, episode.images["main"])

    return demos


def model_frames(
    episodes: Callable[[], Iterator[Episode]], model_folder: Path, batch: int = 8, device: str = "cpu"
) -> FrameSource:
    """Frame source for any dataset: a single-image Depth Anything model from a local folder, frame by frame
    (batched), on the main camera."""
    from PIL import Image

    if not (model_folder / "config.json").is_file():
        raise UserError(
            f"--model {model_folder} is not a transformers model folder (no config.json); download a "
            "Depth Anything model (e.g. depth-anything/Depth-Anything-V2-Small-hf) there first."
        )
    from transformers import pipeline

    try:
        estimator = pipeline("depth-estimation", model=str(model_folder), device=device)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load a depth-estimation model from {model_folder} ({exc}).") from None

    def estimate(frames: np.ndarray) -> tuple[np.ndarray, bool]:
        try:
            outs = estimator([Image.fromarray(frame) for frame in frames], batch_size=batch)
        except RuntimeError as exc:
            raise UserError(
                f"the depth model in {model_folder} fails on {frames.shape[1:]} frames ({exc}); "
                "is it a complete depth-estimation model?"
            ) from None
        disparity = [np.asarray(out["predicted_depth"], dtype=np.float32).squeeze() for out in outs]
        size = (frames.shape[2], frames.shape[1])
        return np.stack([d if d.shape == frames.shape[1:3] else resize_bilinear(d, size) for d in disparity]), True

    def demos() -> Iterator[tuple[str, Frames]]:
        for episode in episodes():
            yield episode_name(episode), functools.partial(estimate, episode.images["main"])

    return demos


def folder_hash(model_folder: Path) -> str:
    """A hash over a model folder's weight files (safetensors/bin) by name: the checkpoint hash that a
    transformers-folder estimator records."""
    weights = sorted(model_folder.glob("*.safetensors")) + sorted(model_folder.glob("*.bin"))
    return stable_hash([(path.name, file_hash(path)) for path in weights])
