"""Which reader a dataset needs, in one place: LIBERO HDF5 files, LeRobot folders, Open-X RLDS builders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets.episode import Episode

FORMATS = ("libero_hdf5", "lerobot", "rlds")


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


def read_episodes(
    path: Path,
    fmt: str | None = None,
    image_size: int = 224,
    cameras: tuple[str, ...] = ("main",),
    keys: dict[str, tuple[str, ...]] | None = None,
    layout: str = "bridge",
) -> Iterator[Episode]:
    """Every episode of one dataset in the given format (found from the path when None)."""
    fmt = fmt or format_of(path)
    if fmt == "libero_hdf5":
        from qdepth_bench.datasets import libero_hdf5

        return libero_hdf5.read_episodes(path, image_size, cameras=cameras)
    if fmt == "lerobot":
        from qdepth_bench.datasets import lerobot

        return lerobot.read_episodes(path, cameras, keys)
    if fmt == "rlds":
        from qdepth_bench.datasets import rlds

        return rlds.read_episodes(path, layout, keys=keys)
    raise UserError(f"data format must be one of {', '.join(FORMATS)} (got {fmt!r}).")
