"""LeRobot datasets, format v3.0 (the current one) and v2.1, read with pyarrow. lerobot itself is not a
dependency: it does not install beside torch 2.13.

v3.0: `meta/info.json`; `meta/tasks.parquet` (the task string is the index, `task_index` a column);
`meta/episodes/chunk-*/file-*.parquet`, one row per episode (`episode_index`, `length`, `tasks`,
`data/chunk_index`, `data/file_index`, `dataset_from_index`, `dataset_to_index`, and per video key
`videos/<key>/chunk_index|file_index|from_timestamp|to_timestamp`); frames of many episodes share one
`data/chunk-*/file-*.parquet` and one mp4 per camera. v2.1: one parquet (and one mp4 per camera) per
episode, `meta/episodes.jsonl` and `meta/tasks.jsonl`.

Images come from parquet image columns (PNG/JPEG bytes) or from the mp4 videos. Column names differ between
datasets, so the reader tries the common names per role (a recipe's `data.keys` overrides them).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets.episode import Episode, as_policy_sees

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


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _decode_image(value: dict | bytes) -> np.ndarray:
    from PIL import Image

    data = value["bytes"] if isinstance(value, dict) else value
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _video_frames(path: Path, first: int, count: int) -> np.ndarray:
    """`count` frames of an mp4 from frame `first` (imageio's ffmpeg plugin), (T, H, W, 3) uint8."""
    import imageio.v2 as imageio

    if not path.is_file():
        raise UserError(f"{path} is missing; download the dataset's videos too.")
    reader: Any  # imageio's v2 stubs type the reader as its base class
    with imageio.get_reader(path) as reader:
        return np.stack([np.asarray(reader.get_data(i))[..., :3] for i in range(first, first + count)])


class LeRobotSource:
    """A LeRobot dataset folder read one episode at a time."""

    def __init__(
        self,
        root: Path,
        image_size: int = 224,
        cameras: tuple[str, ...] = ("main",),
        keys: dict[str, tuple[str, ...]] | None = None,
        rotation_deg: int = 0,
        resize: str = "bilinear",
    ) -> None:
        self.path, self.image_size, self.cameras = Path(root), image_size, cameras
        self.rotation_deg, self.resize = rotation_deg, resize
        self.info = _info(self.path)
        self.keys = {**DEFAULT_KEYS, **(keys or {})}
        self.v3 = str(self.info.get("codebase_version", "v2.1")).lstrip("v").startswith("3")
        self.rows = self._episode_rows()
        self.tasks = self._tasks()

    def _episode_rows(self) -> dict[int, dict]:
        """Episode index -> its metadata row (v3: meta/episodes parquet; v2.1: episodes.jsonl)."""
        if self.v3:
            import pyarrow.parquet as pq

            files = sorted((self.path / "meta" / "episodes").rglob("*.parquet"))
            if not files:
                raise UserError(f"{self.path}: a v3 LeRobot dataset needs meta/episodes/*/*.parquet; download it.")
            rows: list[dict] = []
            for file in files:
                table = pq.read_table(file)
                table = table.select([c for c in table.column_names if not c.startswith("stats/")])
                rows += table.to_pylist()
        else:
            rows = _jsonl(self.path / "meta" / "episodes.jsonl")
            if not rows:
                raise UserError(f"{self.path}: a v2.1 LeRobot dataset needs meta/episodes.jsonl; download it.")
        return {int(r["episode_index"]): r for r in rows}

    def _tasks(self) -> dict[int, str]:
        if not self.v3:
            return {int(r["task_index"]): r["task"] for r in _jsonl(self.path / "meta" / "tasks.jsonl")}
        import pyarrow.parquet as pq

        path = self.path / "meta" / "tasks.parquet"
        if not path.is_file():
            raise UserError(f"{path} is missing; a v3 LeRobot dataset keeps its instructions there.")
        table = pq.read_table(path).to_pydict()
        text = table.get("task", table.get("__index_level_0__"))
        if text is None:
            raise UserError(f"{path} has no task column (columns: {', '.join(table)}).")
        return {int(i): str(t) for i, t in zip(table["task_index"], text, strict=True)}

    def episodes(self) -> list[tuple[str, int]]:
        return [(f"episode_{index}", int(row["length"])) for index, row in sorted(self.rows.items())]

    def _index(self, key: str) -> int:
        index = int(key.removeprefix("episode_"))
        if index not in self.rows:
            raise UserError(f"{self.path} has no episode {index}.")
        return index

    def _data_file(self, index: int) -> Path:
        row, template = self.rows[index], self.info.get("data_path", "")
        if self.v3:
            relative = template.format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        else:
            chunk = index // int(self.info.get("chunks_size", 1000))
            relative = template.format(episode_chunk=chunk, episode_index=index)
        return self.path / relative

    def _table(self, index: int, columns: list[str] | None) -> dict[str, list]:
        """The episode's rows of its data file (v3: only this episode's, of a file that holds several)."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = self._data_file(index)
        if not path.is_file():
            raise UserError(f"{path} is missing; download the dataset's data files.")
        wanted = None if columns is None else [*columns, "episode_index", "task_index"]
        table = pq.read_table(path, columns=wanted, filters=[("episode_index", "=", index)] if self.v3 else None)
        table = table.filter(pc.equal(table["episode_index"], index)) if self.v3 else table
        return table.to_pydict()

    def _column(self, index: int, what: str) -> str:
        import pyarrow.parquet as pq

        names = pq.read_schema(self._data_file(index)).names
        found = next((c for c in self.keys[what] if c in names), None)
        if found is None:
            raise UserError(
                f"{self._data_file(index)}: no {what} column among {', '.join(self.keys[what])} "
                f"(columns: {', '.join(names)}); set the recipe's data.keys.{what}."
            )
        return found

    def instruction(self, key: str) -> str:
        row = self.rows[self._index(key)]
        tasks = row.get("tasks") or []
        if tasks:
            return str(tasks[0])
        data = self._table(self._index(key), [])
        return self.tasks.get(int(data["task_index"][0]), "") if data["task_index"] else ""

    def lowdim(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        index = self._index(key)
        state_key, action_key = self._column(index, "state"), self._column(index, "actions")
        data = self._table(index, [state_key, action_key])
        return np.asarray(data[state_key], dtype=np.float32), np.asarray(data[action_key], dtype=np.float32)

    def _frames(self, index: int, role: str, length: int) -> np.ndarray:
        features = self.info.get("features", {})
        video_key = next((k for k in self.keys[role] if features.get(k, {}).get("dtype") == "video"), None)
        if video_key is None:
            image_key = next((k for k in self.keys[role] if k in features), None) or self._column(index, role)
            return np.stack([_decode_image(v) for v in self._table(index, [image_key])[image_key]])
        row, template = self.rows[index], self.info.get("video_path", "")
        if self.v3:
            prefix = f"videos/{video_key}/"
            relative = template.format(
                video_key=video_key, chunk_index=row[prefix + "chunk_index"], file_index=row[prefix + "file_index"]
            )
            first = round(float(row[prefix + "from_timestamp"]) * float(self.info["fps"]))
        else:
            chunk = index // int(self.info.get("chunks_size", 1000))
            relative = template.format(episode_chunk=chunk, video_key=video_key, episode_index=index)
            first = 0
        return _video_frames(self.path / relative, first, length)

    def episode(self, key: str) -> Episode:
        index = self._index(key)
        state, actions = self.lowdim(key)
        images = {
            role: as_policy_sees(
                self._frames(index, role, len(actions)), self.rotation_deg, self.image_size, self.resize
            )
            for role in self.cameras
        }
        return Episode(self.instruction(key), images, state, actions, source=f"{self.path}:{key}")
