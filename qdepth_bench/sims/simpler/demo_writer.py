"""Successful SIMPLER WidowX episodes as Open-X RLDS datasets, for `data generate --format bridge_rlds |
fractal_rlds`: each success is written as a one-record TFRecord part, and a task's parts become one shard of
the TFDS builder folder `<out>/bridge_dataset/1.0.0` (or `<out>/fractal20220817_data/0.1.0`).

What goes where (the layouts' meanings as `datasets/rlds.py` reads them back):
  bridge   image_0 = the 3rd-view camera squashed to 256 x 256 (Bridge's frames); image_1..3 black with
           has_image_k false (this scene has one camera); state = the eef position, roll/pitch/yaw in the
           Bridge frame and gripper openness (the proprio the WidowX evaluation gives); action = the
           demonstrator's command (its movement is relabelled from reached states when read, as for Bridge);
  fractal  image = the same camera at Fractal's 256 x 320; base_pose_tool_reached = eef position + quaternion
           (x, y, z, w) in the robot base frame; gripper_closed = 1 - openness; world_vector / rotation_delta
           = the command's movement; gripper_closedness_action = the command as RT-1 gives it (+1 close,
           -1 open); the other observation fields RT-1 logs (distances to go, workspace bounds...) are zeros.
Language embeddings are zeros (the Universal Sentence Encoder is not part of this project); reward is 1 on
the last step (only successes are kept), discount 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.imaging import resize_bilinear
from qdepth_bench.core.sim import RecordedEpisode
from qdepth_bench.datasets.rlds_writer import episode_record, write_builder

#: `data generate --format` -> the RLDS layout written
FORMATS = {"bridge_rlds": "bridge", "fractal_rlds": "fractal"}


def _flags(n: int) -> dict[str, list[bool]]:
    return {
        "is_first": [t == 0 for t in range(n)],
        "is_last": [t == n - 1 for t in range(n)],
        "is_terminal": [t == n - 1 for t in range(n)],
    }


def bridge_steps(rows: list[dict[str, np.ndarray]], actions: np.ndarray, instruction: str) -> dict[str, list[Any]]:
    """The step fields of one episode in the Bridge V2 layout."""
    n = len(rows)
    black = np.zeros((256, 256, 3), np.uint8)
    return {
        "observation/image_0": [resize_bilinear(row["image"], 256) for row in rows],
        **{f"observation/image_{i}": [black] * n for i in range(1, 4)},
        "observation/state": [row["state"] for row in rows],
        "action": list(actions),
        "language_instruction": [instruction] * n,
        "language_embedding": [np.zeros(512, np.float32)] * n,
        "reward": [float(t == n - 1) for t in range(n)],
        "discount": [1.0] * n,
        **_flags(n),
    }


def fractal_steps(rows: list[dict[str, np.ndarray]], actions: np.ndarray, instruction: str) -> dict[str, list[Any]]:
    """The step fields of one episode in the Fractal (RT-1) layout."""
    n = len(rows)

    def zeros(*shape: int) -> list[np.ndarray]:
        return [np.zeros(shape, np.float32)] * n

    close = np.where(actions[:, 6] > 0.5, -1.0, 1.0).astype(np.float32)  # WidowX: > 0.5 open
    return {
        "action/base_displacement_vector": zeros(2),
        "action/base_displacement_vertical_rotation": zeros(1),
        "action/gripper_closedness_action": list(close[:, None]),
        "action/rotation_delta": list(actions[:, 3:6]),
        "action/terminate_episode": [np.array([1, 0, 0] if t == n - 1 else [0, 1, 0]) for t in range(n)],
        "action/world_vector": list(actions[:, :3]),
        **_flags(n),
        "observation/base_pose_tool_reached": [row["tool_pose"][:7] for row in rows],
        "observation/gripper_closed": [row["tool_pose"][7:] for row in rows],
        "observation/gripper_closedness_commanded": list(close[:, None]),
        "observation/height_to_bottom": zeros(1),
        "observation/image": [resize_bilinear(row["image"], (320, 256)) for row in rows],
        "observation/natural_language_embedding": zeros(512),
        "observation/natural_language_instruction": [instruction] * n,
        "observation/orientation_box": zeros(2, 3),
        "observation/orientation_start": zeros(4),
        "observation/robot_orientation_positions_box": zeros(3, 3),
        "observation/rotation_delta_to_go": zeros(3),
        "observation/src_rotation": zeros(4),
        "observation/vector_to_go": zeros(3),
        "observation/workspace_bounds": zeros(3, 3),
        "reward": [float(t == n - 1) for t in range(n)],
    }


def episode_fields(layout: str, record: RecordedEpisode, episode_id: int) -> dict[str, Any]:
    """The episode-level fields of the layout."""
    if layout == "bridge":
        return {
            "episode_metadata/file_path": f"{record.episode.suite}/{record.task.task_name}/{record.episode.key}",
            "episode_metadata/episode_id": episode_id,
            "episode_metadata/has_image_0": True,
            **{f"episode_metadata/has_image_{i}": False for i in range(1, 4)},
            "episode_metadata/has_language": True,
        }
    names = ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")
    return {
        "aspects/already_success": False,
        "aspects/feasible": True,
        "aspects/has_aspects": True,
        "aspects/success": True,
        "aspects/undesirable": False,
        **{f"attributes/{k}": 0 for k in names},
        **{f"attributes/{k}_name": "" for k in names},
    }


@dataclass(frozen=True)
class RldsDemoSink:
    """An `EpisodeSink` (and `DemoWriter`) writing one RLDS layout under `folder`."""

    folder: Path
    layout: str
    #: the generation's task ids, in order: task i of them is shard i of the builder folder
    task_ids: tuple[int, ...] = ()
    wants_frames: bool = False
    wants_demo: bool = True
    name: str = "demo"

    @classmethod
    def for_tasks(cls, folder: Path, backend: Any, task_ids: list[int], fmt: str) -> RldsDemoSink:
        if fmt not in FORMATS:
            raise UserError(f"{backend.spec.name} demonstrations are written as {', '.join(FORMATS)}, not {fmt}.")
        return cls(folder, FORMATS[fmt], tuple(task_ids))

    def parts(self, task_id: int) -> list[Path]:
        return sorted((self.folder / "parts" / f"task{task_id:02d}").glob("episode*.tfrecord"))

    def count(self, task_id: int) -> int:
        return len(self.parts(task_id))

    def write(self, record: RecordedEpisode) -> str | None:
        if record.status != "success" or not record.demo_rows:
            return None
        episode = record.episode
        steps_of = bridge_steps if self.layout == "bridge" else fractal_steps
        steps = steps_of(record.demo_rows, np.stack(record.actions).astype(np.float32), record.task.instruction)
        episode_id = episode.task_id * 10_000 + episode.episode_index
        data = episode_record(self.layout, steps, episode_fields(self.layout, record, episode_id))
        path = self.folder / "parts" / f"task{episode.task_id:02d}" / f"episode{episode.episode_index:04d}.tfrecord"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)  # a half-written part never counts as a demonstration
        return str(path)

    def merge(self, task_id: int, limit: int) -> int:
        """The task's first `limit` parts become its shard (`parts/taskNN.shard`); the builder folder is then
        written again from every task's shard so far (tasks without a success have no shard). How many
        episodes the task's shard holds."""
        parts = self.parts(task_id)[:limit]
        shard = self.folder / "parts" / f"task{task_id:02d}.shard"
        shard.parent.mkdir(parents=True, exist_ok=True)
        shard.write_bytes(b"".join(p.read_bytes() for p in parts))
        shards = [self.folder / "parts" / f"task{t:02d}.shard" for t in self.task_ids]
        write_builder(self.folder, self.layout, [s.read_bytes() for s in shards if s.is_file()])
        return len(parts)
