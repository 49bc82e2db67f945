"""Open-X Embodiment RLDS datasets (Bridge, Fractal) from a local TFDS builder folder.

Needs the `rlds` extra (tensorflow-cpu + tensorflow-datasets, about 1 GB, never installed by default);
without it the reader says so in one line. Each RLDS episode is a sequence of steps whose observation and
action fields differ per dataset; `LAYOUTS` names the fields for the two datasets the paper uses, and a
recipe can give its own (`data.keys`). Nested fields are written with "/" ("observation/image_0").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets.episode import Episode

LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    # WidowX: 7-dim delta end-effector actions, 7-dim state, main camera image_0
    "bridge": {"main": ("observation/image_0",), "state": ("observation/state",), "actions": ("action",)},
    # Google robot: actions as separate fields, concatenated in this order
    "fractal": {
        "main": ("observation/image",),
        "state": ("observation/base_pose_tool_reached", "observation/gripper_closed"),
        "actions": ("action/world_vector", "action/rotation_delta", "action/gripper_closedness_action"),
    },
}


def _field(step: dict, path: str) -> np.ndarray:
    value = step
    for part in path.split("/"):
        value = value[part]
    return np.asarray(value)


def read_episodes(
    builder_dir: Path, layout: str = "bridge", split: str = "train", keys: dict[str, tuple[str, ...]] | None = None
) -> Iterator[Episode]:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError(
            "RLDS datasets need the rlds extra: QDEPTH_EXTRAS=libero,model,rlds,dev bash "
            "scripts/setup.sh (tensorflow-cpu + tensorflow-datasets)."
        ) from None
    if layout not in LAYOUTS and not keys:
        raise UserError(f"unknown RLDS layout '{layout}': {', '.join(LAYOUTS)}, or give data.keys in the recipe.")
    fields = {**LAYOUTS.get(layout, {}), **(keys or {})}
    builder = tfds.builder_from_directory(str(builder_dir))
    for index, episode in enumerate(tfds.as_numpy(builder.as_dataset(split=split))):
        steps = list(episode["steps"])
        instruction = steps[0].get("language_instruction", b"")
        instruction = instruction.decode() if isinstance(instruction, bytes) else str(instruction)
        images = {"main": np.stack([_field(s, fields["main"][0]) for s in steps]).astype(np.uint8)}
        state = np.stack([np.concatenate([np.ravel(_field(s, k)) for k in fields["state"]]) for s in steps])
        actions = np.stack([np.concatenate([np.ravel(_field(s, k)) for k in fields["actions"]]) for s in steps])
        yield Episode(
            instruction,
            images,
            state.astype(np.float32),
            actions.astype(np.float32),
            source=f"{builder_dir}:episode_{index}",
        )
