"""LIBERO demonstrations in their published HDF5 layout (robomimic style), read and written.

File layout: `data` group with attrs `problem_info` (JSON with `language_instruction`), `env_args` and
`bddl_file_name`; one group `data/demo_<i>` per episode with `actions` (T, 7), `states` (T, S) flattened
MuJoCo states, and `obs/` holding `agentview_rgb`, `eye_in_hand_rgb` (T, H, W, 3, stored upside down as
rendered), `ee_pos` (T, 3), `ee_ori` (T, 3, axis-angle), `gripper_states` (T, 2) and `joint_states` (T, 7).

Read episodes come out in the evaluation's conventions: frames rotated and resized as the LIBERO suite
does for a policy, proprio state = ee_pos + ee_ori + gripper_states (the 8-dim layout of the suite).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets.episode import Episode, as_policy_sees

STATE_KEYS = ("ee_pos", "ee_ori", "gripper_states")
#: camera role -> the observation name LIBERO's demonstration files use
CAMERA_KEYS = {"main": "agentview_rgb", "wrist": "eye_in_hand_rgb"}


def _open(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"cannot read {path} as HDF5 ({exc}); is it a LIBERO demonstration file?") from None


def demo_names(path: Path) -> list[str]:
    with _open(path) as f:
        if "data" not in f:
            raise UserError(f"{path} has no 'data' group: not a LIBERO/robomimic demonstration file.")
        return sorted(f["data"].keys(), key=lambda k: int(k.split("_")[-1]))


def instruction_of(path: Path) -> str:
    with _open(path) as f:
        info = f["data"].attrs.get("problem_info")
    if info is None:
        return Path(path).stem.replace("_demo", "").replace("_", " ")
    return json.loads(info)["language_instruction"]


class LiberoHdf5Source:
    """One LIBERO demonstration file read one demo at a time (the streaming pipeline's reader): the index and
    the low-dimensional arrays without touching frames, and each demo's frames only when a sample needs them.
    The file is opened per call, so the object can be handed to DataLoader worker processes."""

    def __init__(
        self,
        path: Path,
        image_size: int = 224,
        cameras: tuple[str, ...] = ("main", "wrist"),
        rotation_deg: int = 180,
        resize: str = "bilinear",
    ) -> None:
        self.path, self.image_size, self.cameras = Path(path), image_size, cameras
        self.rotation_deg, self.resize = rotation_deg, resize

    def episodes(self) -> list[tuple[str, int]]:
        """(demo name, frames) of every demo, in the file's order."""
        with _open(self.path) as f:
            return [(name, int(f["data"][name]["actions"].shape[0])) for name in demo_names(self.path)]

    def instruction(self, key: str) -> str:
        return instruction_of(self.path)

    def lowdim(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(state, actions) of one demo: the suite's 8-dim proprio and the 7-dim actions."""
        with _open(self.path) as f:
            demo = self._demo(f, key, ())
            state = np.concatenate([demo["obs"][k][()] for k in STATE_KEYS], axis=1).astype(np.float32)
            return state, demo["actions"][()].astype(np.float32)

    def episode(self, key: str) -> Episode:
        """One demo with its frames rotated and resized as the suite shows them to a policy."""
        state, actions = self.lowdim(key)
        with _open(self.path) as f:
            demo = self._demo(f, key, self.cameras)
            images = {
                role: as_policy_sees(
                    demo["obs"][CAMERA_KEYS[role]][()], self.rotation_deg, self.image_size, self.resize
                )
                for role in self.cameras
            }
            sim_states = demo["states"][()] if "states" in demo else None
        return Episode(self.instruction(key), images, state, actions, sim_states, source=f"{self.path}:{key}")

    def _demo(self, f: Any, key: str, cameras: tuple[str, ...]) -> Any:
        demo = f["data"][key]
        obs = demo["obs"]
        missing = [k for k in (*STATE_KEYS, *(CAMERA_KEYS[c] for c in cameras)) if k not in obs]
        if missing or "actions" not in demo:
            raise UserError(f"{self.path}:{key} lacks {', '.join(missing or ['actions'])}; expected LIBERO's layout.")
        return demo


def read_episodes(
    path: Path, image_size: int = 224, rotation_deg: int = 180, cameras: tuple[str, ...] = ("main", "wrist")
) -> Iterator[Episode]:
    """Every demo of a file, frames as the policy sees them at evaluation."""
    source = LiberoHdf5Source(path, image_size, cameras, rotation_deg)
    for name, _ in source.episodes():
        yield source.episode(name)


def write_episodes(
    path: Path, episodes: list[dict[str, np.ndarray]], instruction: str, bddl_file: str, env_args: dict | None = None
) -> Path:
    """Write demos in LIBERO's layout. Each dict holds `actions`, `states` and the `obs/` arrays, frames as
    rendered (upside down), exactly as LIBERO's own files store them."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": instruction})
        data.attrs["env_args"] = json.dumps(env_args or {})
        data.attrs["bddl_file_name"] = bddl_file
        total = 0
        for i, episode in enumerate(episodes):
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = len(episode["actions"])
            total += len(episode["actions"])
            demo.create_dataset("actions", data=episode["actions"])
            demo.create_dataset("states", data=episode["states"])
            obs = demo.create_group("obs")
            for key, value in episode.items():
                if key.startswith("obs/"):
                    compress = {"compression": "gzip", "compression_opts": 4} if value.dtype == np.uint8 else {}
                    obs.create_dataset(key[4:], data=value, **compress)
        data.attrs["total"] = total
    tmp.replace(path)  # a half-written file never looks finished
    return path
