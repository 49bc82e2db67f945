"""One demonstration episode, whatever file it came from, and the training samples cut from it.

Images are uint8 (T, H, W, 3) per camera role, already in the orientation the policy sees at evaluation
(LIBERO's files store frames upside down; readers turn them). A sample is the frame at time t with the
action chunk a_t .. a_{t+chunk-1} (the last action repeated past the episode's end, with a mask saying
which actions are real), and the depth target of that frame when annotated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from qdepth_bench.core.imaging import resize_frame, rotate


@dataclass
class Episode:
    instruction: str
    images: dict[str, np.ndarray]  # role -> (T, H, W, 3) uint8
    state: np.ndarray  # (T, D) proprio
    actions: np.ndarray  # (T, A)
    sim_states: np.ndarray | None = None  # (T, S) flattened simulator states (LIBERO), for depth annotation
    source: str = ""  # file and episode id, for messages and caches
    depth: np.ndarray | None = None  # (T, H, W) relative depth in [0, 1]
    depth_codes: np.ndarray | None = None  # (T, N) VQ-VAE code indices
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class Sample:
    images: dict[str, np.ndarray]  # role -> (H, W, 3)
    instruction: str
    state: np.ndarray  # (D,)
    actions: np.ndarray  # (chunk, A)
    action_mask: np.ndarray  # (chunk,) True where the action is real
    depth: np.ndarray | None = None
    depth_codes: np.ndarray | None = None


def as_policy_sees(frames: Iterable[np.ndarray], rotation_deg: int, size: int, method: str) -> np.ndarray:
    """Stored camera frames (T, H, W, 3), any iterable of frames, turned and resized the way the evaluation
    shows them to a policy: every format goes through here, so no dataset reaches the model at another size."""
    return np.stack([resize_frame(rotate(np.asarray(f), rotation_deg), size, method) for f in frames])


def sample_at(episode: Episode, t: int, chunk: int) -> Sample:
    """The training sample of frame t: observation at t, actions t .. t+chunk-1 (padded with the last)."""
    end = len(episode)
    index = np.minimum(np.arange(t, t + chunk), end - 1)
    return Sample(
        {role: frames[t] for role, frames in episode.images.items()},
        episode.instruction,
        episode.state[t],
        episode.actions[index],
        np.arange(t, t + chunk) < end,
        None if episode.depth is None else episode.depth[t],
        None if episode.depth_codes is None else episode.depth_codes[t],
    )


def data_fingerprint(episodes: list[Episode]) -> str:
    """A hash of everything training reads from the episodes (instructions, frames, proprio, actions, depth
    and depth codes), in order: two trainings with equal fingerprints saw the same data. Recorded with each
    checkpoint, so an ablation can show its models were trained on one dataset."""
    digest = hashlib.sha256()
    for episode in episodes:
        digest.update(episode.instruction.encode())
        arrays: list[np.ndarray | None] = [episode.images[role] for role in sorted(episode.images)]
        arrays += [episode.state, episode.actions, episode.depth, episode.depth_codes]
        for array in arrays:
            if array is None:
                digest.update(b"-")
                continue
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]
