"""Successful episodes as LIBERO demonstration files, for `data generate`: each success is written as a
one-demo part file (frames as rendered, proprio and the MuJoCo state per step, LIBERO's own HDF5 layout),
and a task's parts are merged into one `<bddl name>_demo.hdf5`, as LIBERO's datasets are named."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.sim import RecordedEpisode
from qdepth_bench.datasets.libero_hdf5 import write_episodes


@dataclass(frozen=True)
class LiberoDemoSink:
    """An `EpisodeSink` (and `DemoWriter`) writing under `folder`."""

    folder: Path
    #: task id -> its BDDL file name (recorded in the files, and the merged file's name)
    bddl_files: dict[int, str] = field(default_factory=dict)
    wants_frames: bool = False
    wants_demo: bool = True
    name: str = "demo"

    @classmethod
    def for_tasks(cls, folder: Path, backend: Any, task_ids: list[int], fmt: str = "libero_hdf5") -> LiberoDemoSink:
        return cls(folder, {t: backend.bddl_file_of(t) for t in task_ids})

    def parts(self, task_id: int) -> list[Path]:
        return sorted((self.folder / "parts" / f"task{task_id:02d}").glob("demo*.hdf5"))

    def count(self, task_id: int) -> int:
        return len(self.parts(task_id))

    def write(self, record: RecordedEpisode) -> str | None:
        if record.status != "success" or not record.demo_rows:
            return None
        episode = record.episode
        demo = {k: np.stack([row[k] for row in record.demo_rows]) for k in record.demo_rows[0]}
        demo["actions"] = np.stack(record.actions)
        path = self.folder / "parts" / f"task{episode.task_id:02d}" / f"demo{episode.episode_index:04d}.hdf5"
        write_episodes(
            path,
            [demo],
            record.task.instruction,
            self.bddl_files[episode.task_id],
            {"suite": episode.suite, "variant": episode.variant, "seed": episode.seed},
        )
        return str(path)

    def merge(self, task_id: int, limit: int) -> int:
        """One LIBERO-format file from the task's first `limit` parts (demos renumbered in order, attributes
        from the first); the number of demos it holds."""
        import h5py

        parts = self.parts(task_id)[:limit]
        if not parts:
            return 0
        demos = []
        with h5py.File(parts[0], "r") as first:
            attrs = dict(first["data"].attrs)
        for part in parts:
            with h5py.File(part, "r") as f:
                group = f["data"]["demo_0"]
                demo = {"actions": group["actions"][()], "states": group["states"][()]}
                demo.update({f"obs/{k}": np.asarray(v[()]) for k, v in group["obs"].items()})
                demos.append(demo)
        instruction = json.loads(attrs["problem_info"])["language_instruction"]
        target = self.folder / f"{Path(self.bddl_files[task_id]).stem}_demo.hdf5"
        write_episodes(target, demos, instruction, str(attrs["bddl_file_name"]), json.loads(attrs["env_args"]))
        return len(parts)
