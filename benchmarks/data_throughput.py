"""The training data stream's speed and memory on synthetic LIBERO-layout files (128 px frames stored upside
down, as LIBERO's own), written to a temporary folder.

1. samples/s of the stream alone (frames decoded, rotated, resized to 224 px, tokenised, batched) with 0, 1
   and 2 DataLoader workers, over a dataset of S frames;
2. the peak RSS of a real training process (`train_policy`, tiny pi0, 2 workers) over S and over 10 x S
   frames, the same number of steps each: the training process itself and its largest worker. The stream
   holds at most shuffle_buffer + one episode of frames per worker, so 10 x S should stay under 1.2 x S;
3. the share of step time the training waited for data (`data_wait` of its log).

    python benchmarks/data_throughput.py [--frames 2000] [--episode 100] [--batches 40] [--steps 30]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_dataset(folder: Path, frames: int, episode: int) -> Path:
    """`frames` frames in episodes of `episode`, one LIBERO-layout file per 20 episodes."""
    from qdepth_bench.datasets.libero_hdf5 import write_episodes

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128]
    demos: list[dict[str, np.ndarray]] = []
    for e in range(frames // episode):
        shift = rng.integers(0, 255, episode)
        video = ((x[None, :, :, None] + y[None, :, :, None] + shift[:, None, None, None] + np.arange(3)) % 256).astype(
            np.uint8
        )
        demos.append(
            {
                "actions": rng.normal(size=(episode, 7)),
                "states": rng.normal(size=(episode, 9)),
                "obs/agentview_rgb": video,
                "obs/ee_pos": rng.normal(size=(episode, 3)),
                "obs/ee_ori": rng.normal(size=(episode, 3)),
                "obs/gripper_states": rng.normal(size=(episode, 2)),
            }
        )
        if len(demos) == 20 or e == frames // episode - 1:
            write_episodes(folder / f"part{e // 20:04d}_demo.hdf5", demos, "put the bowl on the plate", "bowl.bddl")
            demos = []
    return folder


def recipe(folder: Path, out: Path, workers: int, steps: int, batch: int) -> Path:
    path = out.with_suffix(".json")
    path.write_text(
        json.dumps(
            {
                "name": out.name,
                "out": str(out),
                "model": {"size": "tiny", "variant": "pi0"},
                "data": {"paths": [str(folder / "*.hdf5")], "shuffle_buffer": 1000},
                "train": {"steps": steps, "batch_size": batch, "workers": workers, "log_every": 1, "warmup_steps": 1},
            }
        )
    )
    return path


def stream_rate(recipe_path: Path, batches: int) -> float:
    """Samples per second of the stream alone, after its first batch (worker start-up) is out."""
    from qdepth_bench.models.qdepth.config import build_config
    from qdepth_bench.models.qdepth.tokenizer import HashWordTokenizer
    from qdepth_bench.train.data import make_train_loader, open_training_data
    from qdepth_bench.train.recipe import load_recipe

    loaded = load_recipe(recipe_path)
    data = open_training_data(loaded)
    config = build_config("tiny", "pi0", state_dim=data.dims[0], action_dim=data.dims[1])
    loader = make_train_loader(loaded, data, config, HashWordTokenizer())
    loader.next()
    started = time.perf_counter()
    for _ in range(batches):
        loader.next()
    rate = batches * loaded.train.batch_size / (time.perf_counter() - started)
    loader.close()
    return rate


TRAIN = """
import json, resource, sys
from qdepth_bench.train.policy import train_policy
from qdepth_bench.train.recipe import load_recipe
train_policy(load_recipe(sys.argv[1]))
print(json.dumps({"self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def training_peak(recipe_path: Path) -> dict[str, float]:
    """Peak RSS (MiB) of a training process and of its largest worker, and its mean data-wait share."""
    result = subprocess.run([sys.executable, "-c", TRAIN, str(recipe_path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    out = Path(json.loads(recipe_path.read_text())["out"])
    rows = list(csv.DictReader((out / "log.csv").open()))
    waits = [float(r["data_wait"]) for r in rows[1:]]  # step 0 includes the workers' start
    return {
        "self_mib": peaks["self_kib"] / 1024,
        "worker_mib": peaks["worker_kib"] / 1024,
        "data_wait": float(np.mean(waits)),
        "first_wait": float(rows[0]["data_wait"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="S: frames of the small dataset")
    parser.add_argument("--episode", type=int, default=100, help="frames per episode")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per worker count")
    parser.add_argument("--steps", type=int, default=30, help="training steps per RSS measurement")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        small = write_dataset(root / "S", args.frames, args.episode)
        large = write_dataset(root / "10S", 10 * args.frames, args.episode)
        print(
            f"datasets: S = {args.frames} frames, 10xS = {10 * args.frames} frames "
            f"({time.perf_counter() - started:.0f} s to write)"
        )
        for workers in (0, 1, 2):
            rate = stream_rate(recipe(small, root / f"rate{workers}", workers, 1, args.batch_size), args.batches)
            print(f"stream, {workers} workers: {rate:.1f} samples/s (batch {args.batch_size}, 224 px)")
        peaks = {}
        for name, folder in (("S", small), ("10xS", large)):
            peaks[name] = training_peak(recipe(folder, root / f"train{name}", 2, args.steps, args.batch_size))
            p = peaks[name]
            print(
                f"training over {name}: peak RSS {p['self_mib']:.0f} MiB (process), {p['worker_mib']:.0f} MiB "
                f"(largest worker); waiting for data {100 * p['data_wait']:.1f}% of step time after step 0 "
                f"(step 0: {100 * p['first_wait']:.0f}%)"
            )
        ratio = peaks["10xS"]["self_mib"] / peaks["S"]["self_mib"]
        worker_ratio = peaks["10xS"]["worker_mib"] / peaks["S"]["worker_mib"]
        print(f"peak RSS 10xS / S: {ratio:.3f} (process), {worker_ratio:.3f} (worker); target < 1.2")


if __name__ == "__main__":
    main()
