"""Which reader a dataset needs, in one place: LIBERO HDF5 files, LeRobot folders, Open-X RLDS builders.

Every reader offers the same lazy interface (`EpisodeSource`): the episode index and the low-dimensional
arrays without decoding a frame, and one episode's frames (rotated and resized to the model's input) only
when the training stream reaches it. That is what keeps a training process's memory flat as datasets grow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets.episode import Episode

FORMATS = ("libero_hdf5", "lerobot", "rlds")
#: The rotation each format's frames need to look as the policy sees them at evaluation: LIBERO's own
#: HDF5 files hold the renders upside down; LeRobot's and openvla's LIBERO copies were turned when made.
DEFAULT_ROTATION = {"libero_hdf5": 180, "lerobot": 0, "rlds": 0}


#: The suites' name (content/suites, `state_layout`) of the proprio state each reader's layout gives, so a
#: policy trained on a mixture can find a suite's dataset by it. LeRobot folders have no fixed layout: their
#: recipe entry names it (`data.datasets[].state_layout`), else it stays unknown ("").
STATE_LAYOUTS = {
    ("libero_hdf5", ""): "libero_eef_axis_angle_gripper_qpos",
    ("rlds", "libero"): "libero_eef_axis_angle_gripper_qpos",
    ("rlds", "bridge"): "bridge_eef_pos_rpy_openness",
    ("rlds", "fractal"): "google_eef_pos_quat_xyzw_closedness",
}


def state_layout_of(fmt: str, layout: str) -> str:
    """The suites' name of the state a format (and, for RLDS, its layout) reads; "" when not fixed."""
    return STATE_LAYOUTS.get((fmt, layout if fmt == "rlds" else ""), "")


class EpisodeSource(Protocol):
    """One dataset read on demand. Keys are the episode names depth caches use (`demo_3`, `episode_3`)."""

    path: Path
    image_size: int  # frames come out image_size x image_size

    def episodes(self) -> list[tuple[str, int]]:
        """(key, number of frames) of every episode, in the dataset's order."""
        ...

    def instruction(self, key: str) -> str: ...

    def lowdim(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(state (T, D), actions (T, A)) float32, frames left undecoded."""
        ...

    def episode(self, key: str) -> Episode:
        """The whole episode, frames at the model's input size in the policy's orientation."""
        ...


def format_of(path: Path) -> str:
    """The format of a dataset on disk: an HDF5 file, a LeRobot folder (meta/info.json) or an RLDS builder
    folder (dataset_info.json)."""
    if path.is_file() and path.suffix in (".hdf5", ".h5"):
        return "libero_hdf5"
    if (path / "meta" / "info.json").is_file():
        return "lerobot"
    if (path / "dataset_info.json").is_file():
        return "rlds"
    raise UserError(
        f"{path} is neither a LIBERO HDF5 file, a LeRobot folder (meta/info.json) nor an RLDS builder "
        "folder (dataset_info.json); give the dataset's path."
    )


def open_source(
    path: Path,
    fmt: str | None = None,
    image_size: int = 224,
    cameras: tuple[str, ...] = ("main",),
    keys: dict[str, tuple[str, ...]] | None = None,
    layout: str = "bridge",
    rotation_deg: int | None = None,
    resize: str = "bilinear",
) -> EpisodeSource:
    """The lazy reader of one dataset (format found from the path when None); `rotation_deg` None takes the
    format's convention (`DEFAULT_ROTATION`)."""
    fmt = fmt or format_of(path)
    if fmt not in FORMATS:
        raise UserError(f"data format must be one of {', '.join(FORMATS)} (got {fmt!r}).")
    rotation = DEFAULT_ROTATION[fmt] if rotation_deg is None else rotation_deg
    if fmt == "libero_hdf5":
        from qdepth_bench.datasets.libero_hdf5 import LiberoHdf5Source

        return LiberoHdf5Source(path, image_size, cameras, rotation, resize)
    if fmt == "lerobot":
        from qdepth_bench.datasets.lerobot import LeRobotSource

        return LeRobotSource(path, image_size, cameras, keys, rotation, resize)
    from qdepth_bench.datasets.rlds import RldsSource

    return RldsSource(path, layout, image_size, keys, rotation, resize, cameras=cameras)


def read_episodes(path: Path, fmt: str | None = None, layout: str = "bridge") -> Iterator[Episode]:
    """Every episode of one dataset, one at a time, read as `open_source` reads it by default (224 px frames
    of the main camera, the format's own keys): what depth annotation estimates depth from."""
    source = open_source(path, fmt, layout=layout)
    for key, _ in source.episodes():
        yield source.episode(key)
