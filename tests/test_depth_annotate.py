"""`qdepth-bench depth annotate` with Video-Depth-Anything on a LeRobot dataset, through the real CLI: the
sidecar's keys, shapes and recorded settings, refusal to mix settings, per-episode normalisation, and a
killed annotation resuming without recomputing finished episodes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers_vida import read_shapes

from qdepth_bench.core.hashing import file_hash
from qdepth_bench.datasets.depth import to_relative
from qdepth_bench.models.vida.checkpoint import seeded_weights

FRAMES, SIZE = 20, 32  # one ViDA window (32 frames, the last repeated) per episode


def write_lerobot(root: Path, episodes: int) -> Path:
    """A LeRobot v3.0 folder as LeRobot's writer lays it out: meta/info.json, meta/tasks.parquet,
    meta/episodes/ (each episode's length and data file) and one data file holding every episode, PNG frames."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": "v3.0",
        "fps": 10,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "features": {},
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    pq.write_table(pa.table({"task_index": [0], "task": ["pick the bowl"]}), root / "meta" / "tasks.parquet")
    rng = np.random.default_rng(0)
    columns: dict[str, list] = {k: [] for k in ("observation.images.image", "observation.state", "action")}
    columns |= {"episode_index": [], "task_index": []}
    for index in range(episodes):
        for t in range(FRAMES):  # a bright square sliding over a gradient
            frame = np.tile(np.linspace(0, 200, SIZE, dtype=np.uint8)[None, :, None], (SIZE, 1, 3))
            frame[8:20, (t + index) % 20 : (t + index) % 20 + 12] = 255
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="PNG")
            columns["observation.images.image"].append({"bytes": buffer.getvalue(), "path": None})
        columns["observation.state"] += rng.normal(size=(FRAMES, 8)).astype(np.float32).tolist()
        columns["action"] += rng.normal(size=(FRAMES, 7)).astype(np.float32).tolist()
        columns["episode_index"] += [index] * FRAMES
        columns["task_index"] += [0] * FRAMES
    pq.write_table(pa.table(columns), root / "data" / "chunk-000" / "file-000.parquet")
    meta = {
        "episode_index": list(range(episodes)),
        "length": [FRAMES] * episodes,
        "data/chunk_index": [0] * episodes,
        "data/file_index": [0] * episodes,
    }
    pq.write_table(pa.table(meta), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file in the released vits format (every released tensor name and shape) with seeded weights."""
    path = tmp_path_factory.mktemp("vida") / "video_depth_anything_vits.pth"
    torch.save(seeded_weights(read_shapes("vits")), path)
    return path


def annotate_args(dataset: Path, checkpoint: Path, *extra: str) -> list[str]:
    vida = ["--source", "vida", "--checkpoint", str(checkpoint), "--input-size", "28", "--device", "cpu"]
    return ["depth", "annotate", str(dataset), *vida, *extra]


def test_vida_annotates_a_lerobot_dataset_into_a_sidecar(cli, tmp_path: Path, checkpoint: Path) -> None:
    dataset = write_lerobot(tmp_path / "lerobot", episodes=2)
    result = cli(*annotate_args(dataset, checkpoint), db=False)
    assert result.exit_code == 0, result.output
    assert "annotated 2 demos (40 frames)" in result.output
    with h5py.File(dataset / "depth.h5", "r") as f:
        assert dict(f.attrs) == {"estimator": "vida", "checkpoint": file_hash(checkpoint), "normalisation": "episode"}
        assert sorted(f) == ["episode_0", "episode_1"]
        relative = f["episode_0"]["relative"][()]
        # frames are read as the policy sees them (the model's 224 px), so their depth is too
        assert relative.shape == (FRAMES, 224, 224) and relative.dtype == np.uint8
        assert relative.min() == 0 and relative.max() == 255  # the episode spans the range, frames need not

    refused = cli(*annotate_args(dataset, checkpoint, "--normalise", "frame"), db=False)
    assert refused.exit_code != 0
    assert "delete it or annotate with its settings" in refused.stderr


def test_episode_normalisation_keeps_changes_between_frames_that_frame_normalisation_removes() -> None:
    near = np.linspace(1.0, 2.0, 64, dtype=np.float32).reshape(1, 8, 8)
    disparity = np.concatenate([near, 2 * near])  # the second frame is everywhere twice as near
    per_episode, ranges = to_relative(disparity, inverse=True, normalisation="episode")
    per_frame, _ = to_relative(disparity, inverse=True, normalisation="frame")
    assert np.array_equal(ranges[0], ranges[1])
    assert per_episode[1].mean() < per_episode[0].mean() - 50  # nearer stays nearer
    assert np.array_equal(per_frame[0], per_frame[1])  # per frame, both look the same


@pytest.mark.slow
def test_a_killed_annotation_resumes_without_recomputing_finished_episodes(
    cli, tmp_path: Path, checkpoint: Path
) -> None:
    dataset = write_lerobot(tmp_path / "lerobot", episodes=4)
    command = [sys.executable, "-m", "qdepth_bench", *annotate_args(dataset, checkpoint)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()  # the first finished episode
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert line.strip() == f"episode_0: {FRAMES} frames", line + process.stderr.read() if process.stderr else ""
    with h5py.File(dataset / "depth.h5", "r") as f:
        finished = {name: f[name]["relative"][()] for name in f}
    assert 1 <= len(finished) < 4

    result = cli(*annotate_args(dataset, checkpoint), db=False)
    assert result.exit_code == 0, result.output
    recomputed = [line.split(":")[0].strip() for line in result.output.splitlines() if line.startswith("  episode_")]
    assert recomputed == [f"episode_{i}" for i in range(len(finished), 4)]
    assert f"skipped {len(finished)} already done" in result.output
    with h5py.File(dataset / "depth.h5", "r") as f:
        assert sorted(f) == [f"episode_{i}" for i in range(4)]
        for name, relative in finished.items():
            assert np.array_equal(f[name]["relative"][()], relative)


@pytest.mark.parametrize(
    ("fixture", "fmt", "layout"),
    [
        ("lerobot/libero_tiny_v3", "lerobot", "bridge"),  # written by LeRobot's own writer (v3.0)
        ("rlds/bridge_dataset/1.0.0", "rlds", "bridge"),  # written by tensorflow-datasets
    ],
)
def test_vida_annotates_the_written_fixtures_through_the_cli(
    cli, tmp_path: Path, checkpoint: Path, fixture: str, fmt: str, layout: str
) -> None:
    """The LeRobot v3.0 and Bridge RLDS fixtures of tests/data (see their READMEs), named by format and layout."""
    import shutil

    from qdepth_bench.datasets.formats import open_source

    dataset = tmp_path / "dataset"
    shutil.copytree(Path(__file__).parent / "data" / fixture, dataset)
    args = annotate_args(dataset, checkpoint, "--format", fmt, "--layout", layout)
    result = cli(*args, db=False)
    assert result.exit_code == 0, result.output
    lengths = dict(open_source(dataset, fmt, 224, ("main",), {}, layout, 0, "bilinear").episodes())
    with h5py.File(dataset / "depth.h5", "r") as f:
        assert dict(f.attrs)["estimator"] == "vida"
        assert {key: f[key]["relative"].shape[0] for key in f} == lengths
    again = cli(*args, db=False)  # every episode is done: nothing is computed again
    assert again.exit_code == 0 and f"skipped {len(lengths)} already done" in again.output
