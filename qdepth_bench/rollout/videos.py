"""Per-episode videos: the main camera as the policy saw it, one mp4 per episode, never overwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError


def video_path(folder: Path, run_id: str, suite: str, task_id: int, episode_index: int, status: str) -> Path:
    """`<folder>/<run id>/<suite>_task<t>_ep<e>_<status>.mp4`: unique per episode and outcome."""
    return folder / run_id / f"{suite}_task{task_id:02d}_ep{episode_index:03d}_{status}.mp4"


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
    with imageio.get_writer(candidate, fps=fps, codec="libx264", quality=7, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)
    return candidate
