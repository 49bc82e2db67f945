"""Per-episode videos: the main camera as the policy saw it, one mp4 per episode, never overwritten."""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.sim import RecordedEpisode


def video_path(
    folder: Path, run_id: str, suite: str, task_id: int, episode_index: int, status: str, repeat: int = 0
) -> Path:
    """`<folder>/<run id>/<suite>_task<t>_ep<e>[_r<repeat>]_<status>.mp4`: unique per episode and outcome."""
    again = f"_r{repeat}" if repeat else ""
    return folder / run_id / f"{suite}_task{task_id:02d}_ep{episode_index:03d}{again}_{status}.mp4"


#: free space below which a run with --video is refused before its first episode
MIN_FREE_MB_FOR_VIDEOS = 200


def check_video_dir(folder: Path | None) -> None:
    """Refuse, before any episode runs and without creating anything, a --video folder that cannot be
    written: a file in the way, no permission, or too little free disk."""
    if folder is None:
        return
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--video {folder}: {existing} is a file, not a folder; pass another --video folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--video {folder}: {existing} is not writable; pass a --video folder you can write.")
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < MIN_FREE_MB_FOR_VIDEOS:
        raise UserError(
            f"--video {folder}: only {free_mb:.0f} MB free there (videos need about 1 MB per episode, and "
            f"{MIN_FREE_MB_FOR_VIDEOS} MB are asked for); free space or pass another --video folder."
        )


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """Encode frames as H.264 mp4; an existing file gets a numbered sibling instead of being replaced."""
    try:
        import imageio.v2 as imageio
    except ImportError as exc:
        raise UserError("--video needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        n += 1
    writer: Any  # imageio's v2 stubs type the writer as its base class, which lacks append_data
    try:
        # ffmpeg's own log stays quiet: a failure is reported once, below, in one line
        with imageio.get_writer(
            candidate, fps=fps, codec="libx264", quality=7, macro_block_size=1, ffmpeg_log_level="quiet"
        ) as writer:
            for frame in frames:
                writer.append_data(frame)
    except OSError as exc:
        candidate.unlink(missing_ok=True)  # never leave a partial or empty mp4 behind
        raise encoder_failure(exc, path.parent) from None
    return candidate


def encoder_failure(exc: OSError, folder: Path) -> Exception:
    """The one-line error for an encoder that died. A full disk reaches the harness as ffmpeg's broken pipe
    (EPIPE), so the disk is checked: no room there is ENOSPC, which the next run of the command retries."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT) or _disk_full(folder)
    if full:
        return OSError(errno.ENOSPC, "the disk holding the --video folder is full; free space there")
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return RuntimeError(f"the video encoder failed ({first_line})")


#: free space under which a dead encoder is taken to have run out of disk (an episode's mp4 is about 1 MB)
FULL_DISK_BYTES = 4 << 20


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < FULL_DISK_BYTES
    except OSError:
        return False


@dataclass(frozen=True)
class VideoSink:
    """`--video FOLDER`: every episode's main-camera frames as one mp4 (an `EpisodeSink`)."""

    folder: Path
    wants_frames: bool = True
    wants_demo: bool = False
    name: str = "video"

    def write(self, record: RecordedEpisode) -> str | None:
        if not record.frames:
            return None
        path = video_path(
            self.folder,
            record.run_id,
            record.episode.suite,
            record.episode.task_id,
            record.episode.episode_index,
            record.status,
            record.episode.repeat,
        )
        return str(write_video(path, record.frames, record.control_hz))
