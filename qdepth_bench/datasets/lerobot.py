"""LeRobot-format datasets (v2: `meta/info.json`, `meta/tasks.jsonl`, parquet per episode), read with
pyarrow. lerobot itself is not a dependency: it does not install beside torch 2.13.

Images are read from parquet image columns (PNG/JPEG bytes) or from the dataset's mp4 videos. Column
names differ between datasets, so the reader tries the common names per role (`--image-key` style
overrides come from the recipe's `keys`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets.episode import Episode

DEFAULT_KEYS = {
    "main": ("observation.images.image", "observation.images.main", "observation.image", "image"),
    "wrist": ("observation.images.wrist_image", "observation.images.wrist", "wrist_image"),
    "state": ("observation.state", "state"),
    "actions": ("action", "actions"),
}


def _info(root: Path) -> dict:
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise UserError(f"{root} is not a LeRobot dataset (no meta/info.json).")
    return json.loads(path.read_text())


def _tasks(root: Path) -> dict[int, str]:
    path = root / "meta" / "tasks.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {int(r["task_index"]): r["task"] for r in rows}


def _pick(columns: list[str], candidates: tuple[str, ...], what: str, root: Path, required: bool = True) -> str | None:
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise UserError(
            f"{root}: no {what} column among {', '.join(candidates)} (columns: {', '.join(columns)}); "
            f"set the recipe's data.keys.{what}."
        )
    return found


def _decode_image(value: dict | bytes) -> np.ndarray:
    from PIL import Image

    data = value["bytes"] if isinstance(value, dict) else value
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _video_frames(path: Path) -> np.ndarray:
    """Every frame of an episode's mp4 (imageio's ffmpeg plugin), (T, H, W, 3) uint8."""
    import imageio.v2 as imageio

    reader: Any  # imageio's v2 stubs type the reader as its base class, which is not iterable
    with imageio.get_reader(path) as reader:
        return np.stack([np.asarray(frame)[..., :3] for frame in reader])


def read_episodes(
    root: Path, cameras: tuple[str, ...] = ("main",), keys: dict[str, tuple[str, ...]] | None = None
) -> Iterator[Episode]:
    """Every episode of a LeRobot dataset folder."""
    import pyarrow.parquet as pq

    info, tasks = _info(root), _tasks(root)
    keys = {**DEFAULT_KEYS, **(keys or {})}
    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        raise UserError(f"{root}: no parquet files under data/.")
    features = info.get("features", {})
    for file in files:
        table = pq.read_table(file)
        columns = table.column_names
        state_key = _pick(columns, keys["state"], "state", root)
        action_key = _pick(columns, keys["actions"], "actions", root)
        data = table.to_pydict()
        episode_index = int(data["episode_index"][0]) if "episode_index" in data else files.index(file)
        images = {}
        for role in cameras:
            key = _pick(columns, keys[role], role, root, required=False)
            if key is not None:
                images[role] = np.stack([_decode_image(v) for v in data[key]])
                continue
            video_key = next((k for k in keys[role] if features.get(k, {}).get("dtype") == "video"), None)
            if video_key is None:
                raise UserError(f"{root}: no {role} camera column or video among {', '.join(keys[role])}.")
            template = info["video_path"]
            chunk = episode_index // int(info.get("chunks_size", 1000))
            images[role] = _video_frames(
                root / template.format(episode_chunk=chunk, video_key=video_key, episode_index=episode_index)
            )
        task_index = int(data["task_index"][0]) if "task_index" in data else 0
        yield Episode(
            tasks.get(task_index, ""),
            images,
            np.asarray(data[state_key], dtype=np.float32),
            np.asarray(data[action_key], dtype=np.float32),
            source=f"{root}:episode_{episode_index}",
        )
