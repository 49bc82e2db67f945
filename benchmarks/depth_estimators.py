"""Depth labels against the simulator's depth on the project's own LIBERO demonstrations: frame-to-frame
scale jitter, abs-rel error and frames/s of Depth-Anything-V2 (per frame), Video-Depth-Anything with
per-frame normalisation and ViDA with per-episode normalisation, through the code paths `depth annotate`
runs (`datasets.depth`).

No released weights can be loaded on this machine (no network to Hugging Face / GitHub), so both networks
carry seeded RANDOM weights (`checkpoint.seeded_weights`) at their released small sizes (DA-V2-Small,
ViDA-vits): the figures then measure the labelling procedure (what the normalisation and the windowed
alignment do to temporal consistency), not the estimators' accuracy. Pass `--vida-checkpoint
video_depth_anything_vits.pth` and `--da2-model FOLDER` to measure the real ones.

Metrics, per episode, on the stored relative depth r (uint8 / 255; 0 near, 1 far) against the simulator's
metric depth d of the same frames:
  abs-rel  one affine map a*r + b fitted to d over the whole episode (least squares), then mean |a*r+b - d|/d:
           how well a single calibration fits every frame, which is what consistent labels allow;
  jitter   the affine map fitted per frame, then the std of log(a_t / a_{t-1}): how much the label's scale
           wanders between consecutive frames (0 for labels exactly affine in the true depth with a fixed map).

    python benchmarks/depth_estimators.py --demos data/libero_object_scripted/task0_demo.hdf5 \
        [--episodes 2] [--max-frames 64] [--input-size 252] [--threads 2]
Without --demos it records one scripted demonstration of libero_object task 0 first (`data generate`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from qdepth_bench.datasets import depth
from qdepth_bench.datasets.episode import Episode
from qdepth_bench.datasets.libero_hdf5 import read_episodes
from qdepth_bench.models.vida.checkpoint import seeded_weights


def affine_fit(r: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    a, b = np.polyfit(r.ravel().astype(np.float64), d.ravel().astype(np.float64), 1)
    return float(a), float(b)


def metrics(relative: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(abs-rel with one affine map per episode, frame-to-frame scale jitter) of uint8 labels vs metres."""
    r = relative.astype(np.float64) / 255.0
    a, b = affine_fit(r, truth)
    abs_rel = float(np.mean(np.abs(a * r + b - truth) / truth))
    scales = np.array([affine_fit(r[t], truth[t])[0] for t in range(len(r))])
    ratios = scales[1:] / scales[:-1]
    jitter = float(np.std(np.log(np.abs(ratios[ratios != 0])))) if len(ratios) else 0.0
    return abs_rel, jitter


def record_demo(folder: Path) -> Path:
    """One scripted demonstration of libero_object task 0 through the CLI."""
    command = [sys.executable, "-m", "qdepth_bench", "data", "generate", "libero_object", "--tasks", "0"]
    command += ["--episodes-per-task", "1", "--out", str(folder), "--workers", "1"]
    subprocess.run(command, check=True)
    return next(folder.glob("*_demo.hdf5"))


def seeded(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights that keep both networks' outputs varied (torch's default init leaves ViDA's output
    almost all zero after its final ReLU, which would make every label constant)."""
    weights = seeded_weights({name: tuple(p.shape) for name, p in model.named_parameters()})
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(weights[name])
    return model


def random_da2_folder(folder: Path, input_size: int) -> Path:
    """Depth-Anything-V2-Small's architecture with random weights, saved as a transformers folder."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

    backbone = {"model_type": "dinov2", "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6}
    backbone |= {"image_size": 518, "patch_size": 14, "out_indices": [3, 6, 9, 12], "reshape_hidden_states": False}
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384)
    seeded(DepthAnythingForDepthEstimation(config)).save_pretrained(folder)
    size = {"height": input_size, "width": input_size}
    DPTImageProcessor(size=size, keep_aspect_ratio=True, ensure_multiple_of=14).save_pretrained(folder)
    return folder


def timed(source: depth.FrameSource) -> Iterator[tuple[str, np.ndarray, bool, float]]:
    """(episode, values, is_inverse, seconds) of each episode of a frame source."""
    for name, make in source():
        start = time.perf_counter()
        values, inverse = make()
        yield name, values, inverse, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", type=Path)
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=252, help="network short side (released: 518)")
    parser.add_argument("--vida-checkpoint", type=Path)
    parser.add_argument("--da2-model", type=Path)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="depth-bench-"))
    demos = args.demos or record_demo(scratch / "demos")

    def episodes() -> Iterator[Episode]:
        for index, episode in enumerate(read_episodes(demos)):
            if index == args.episodes:
                return
            episode.images["main"] = episode.images["main"][: args.max_frames]
            yield episode

    truths = {}
    for name, values, _, _ in timed(depth.sim_frames(demos, None)):
        truths[name] = values[: args.max_frames]
        if len(truths) == args.episodes:
            break

    if args.vida_checkpoint:
        from qdepth_bench.models.vida.checkpoint import load_checkpoint

        vida, vida_origin = load_checkpoint(args.vida_checkpoint)[0], "released weights"
    else:
        from qdepth_bench.models.vida.config import preset
        from qdepth_bench.models.vida.model import VideoDepthAnything

        vida, vida_origin = seeded(VideoDepthAnything(preset("vits"))).eval(), "RANDOM weights"
    da2_folder = args.da2_model or random_da2_folder(scratch / "da2", args.input_size)
    da2_origin = "local weights" if args.da2_model else "RANDOM weights"
    sources: dict[str, Callable[[], depth.FrameSource]] = {
        "DA-V2-Small": lambda: depth.model_frames(episodes, da2_folder, batch=8, device=args.device),
        "ViDA-vits": lambda: depth.vida_frames(episodes, vida, args.input_size, 1, args.device),
    }
    # the simulator's own depth as labels: what each normalisation does to a perfect estimate
    rows = [
        ("simulator depth", norm, "-", {n: depth.to_relative(t, False, norm)[0] for n, t in truths.items()}, 0.0, 0)
        for norm in ("frame", "episode")
    ]
    for label, make_source in sources.items():
        outputs, seconds, frames = {}, 0.0, 0
        for name, values, inverse, spent in timed(make_source()):
            outputs[name] = (values, inverse)
            seconds, frames = seconds + spent, frames + len(values)
        origin = vida_origin if label.startswith("ViDA") else da2_origin
        for normalisation in ("frame", "episode") if label.startswith("ViDA") else ("frame",):
            labelled = {n: depth.to_relative(v, inv, normalisation)[0] for n, (v, inv) in outputs.items()}
            rows.append((label, normalisation, origin, labelled, seconds, frames))

    print(
        f"{demos}: {len(truths)} episodes, {sum(len(t) for t in truths.values())} frames at "
        f"{next(iter(truths.values())).shape[1:]}; networks at short side {args.input_size}, {args.device}, "
        f"torch {torch.__version__}, {args.threads} threads"
    )
    print(f"{'labels':<20} {'normalised per':<15} {'weights':<16} {'abs-rel':>8} {'jitter':>8} {'frames/s':>9}")
    for label, normalisation, origin, labelled, seconds, frames in rows:
        scores = np.array([metrics(labelled[n], truths[n]) for n in truths])
        rate = f"{frames / seconds:9.2f}" if seconds else f"{'-':>9}"
        print(
            f"{label:<20} {normalisation:<15} {origin:<16} {scores[:, 0].mean():8.3f} {scores[:, 1].mean():8.4f} {rate}"
        )


if __name__ == "__main__":
    main()
