"""Writes the three small RLDS fixtures of tests/test_dataset_formats.py with tensorflow-datasets itself (not part of
the project's environment: run it in a scratch venv with `pip install tensorflow-cpu tensorflow-datasets`).

Each builder declares the feature structure of the published dataset (field names, shapes, dtypes and image
encodings as the TFDS catalog, Berkeley's bridge_dataset builder and openvla's LIBERO builders list them) and
fills a few short episodes with synthetic values chosen to exercise the conversions (Bridge's gripper with
values in between, Fractal's relative gripper commands). Then TFDS's own reader reads every episode back and
`expected.json` records what it returned, which the project's tensorflow-free reader must reproduce.

    python tests/data/rlds/make_fixtures.py tests/data/rlds
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

F = tfds.features


def image(shape: tuple[int, int, int]) -> F.Image:
    return F.Image(shape=shape, dtype=np.uint8, encoding_format="jpeg")


def flags() -> dict:
    return {k: F.Scalar(dtype=np.bool_) for k in ("is_first", "is_last", "is_terminal")}


BRIDGE = F.FeaturesDict(
    {
        "steps": F.Dataset(
            {
                "observation": F.FeaturesDict(
                    {
                        **{f"image_{i}": image((256, 256, 3)) for i in range(4)},
                        "state": F.Tensor(shape=(7,), dtype=np.float32),
                    }
                ),
                "action": F.Tensor(shape=(7,), dtype=np.float32),
                "language_instruction": F.Text(),
                "language_embedding": F.Tensor(shape=(512,), dtype=np.float32),
                "reward": F.Scalar(dtype=np.float32),
                "discount": F.Scalar(dtype=np.float32),
                **flags(),
            }
        ),
        "episode_metadata": F.FeaturesDict(
            {
                "file_path": F.Text(),
                "episode_id": F.Scalar(dtype=np.int32),
                **{f"has_image_{i}": F.Scalar(dtype=np.bool_) for i in range(4)},
                "has_language": F.Scalar(dtype=np.bool_),
            }
        ),
    }
)

FRACTAL = F.FeaturesDict(
    {
        "aspects": F.FeaturesDict(
            {
                k: F.Scalar(dtype=np.bool_)
                for k in ("already_success", "feasible", "has_aspects", "success", "undesirable")
            }
        ),
        "attributes": F.FeaturesDict(
            {
                **{
                    k: F.Scalar(dtype=np.int64)
                    for k in ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")
                },
                **{
                    f"{k}_name": F.Text()
                    for k in ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")
                },
            }
        ),
        "steps": F.Dataset(
            {
                "action": F.FeaturesDict(
                    {
                        "base_displacement_vector": F.Tensor(shape=(2,), dtype=np.float32),
                        "base_displacement_vertical_rotation": F.Tensor(shape=(1,), dtype=np.float32),
                        "gripper_closedness_action": F.Tensor(shape=(1,), dtype=np.float32),
                        "rotation_delta": F.Tensor(shape=(3,), dtype=np.float32),
                        "terminate_episode": F.Tensor(shape=(3,), dtype=np.int32),
                        "world_vector": F.Tensor(shape=(3,), dtype=np.float32),
                    }
                ),
                **flags(),
                "observation": F.FeaturesDict(
                    {
                        "base_pose_tool_reached": F.Tensor(shape=(7,), dtype=np.float32),
                        "gripper_closed": F.Tensor(shape=(1,), dtype=np.float32),
                        "gripper_closedness_commanded": F.Tensor(shape=(1,), dtype=np.float32),
                        "height_to_bottom": F.Tensor(shape=(1,), dtype=np.float32),
                        "image": image((256, 320, 3)),
                        "natural_language_embedding": F.Tensor(shape=(512,), dtype=np.float32),
                        "natural_language_instruction": F.Text(),
                        "orientation_box": F.Tensor(shape=(2, 3), dtype=np.float32),
                        "orientation_start": F.Tensor(shape=(4,), dtype=np.float32),
                        "robot_orientation_positions_box": F.Tensor(shape=(3, 3), dtype=np.float32),
                        "rotation_delta_to_go": F.Tensor(shape=(3,), dtype=np.float32),
                        "src_rotation": F.Tensor(shape=(4,), dtype=np.float32),
                        "vector_to_go": F.Tensor(shape=(3,), dtype=np.float32),
                        "workspace_bounds": F.Tensor(shape=(3, 3), dtype=np.float32),
                    }
                ),
                "reward": F.Scalar(dtype=np.float32),
            }
        ),
    }
)

LIBERO = F.FeaturesDict(
    {
        "steps": F.Dataset(
            {
                "observation": F.FeaturesDict(
                    {
                        "image": image((256, 256, 3)),
                        "wrist_image": image((256, 256, 3)),
                        "state": F.Tensor(shape=(8,), dtype=np.float32),
                        "joint_state": F.Tensor(shape=(7,), dtype=np.float32),
                    }
                ),
                "action": F.Tensor(shape=(7,), dtype=np.float32),
                "discount": F.Scalar(dtype=np.float32),
                "reward": F.Scalar(dtype=np.float32),
                **flags(),
                "language_instruction": F.Text(),
            }
        ),
        "episode_metadata": F.FeaturesDict({"file_path": F.Text()}),
    }
)


def frames(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth frames (they compress to a few kB) that differ per step."""
    h, w, _ = shape
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((n, *shape), np.uint8)
    for t in range(n):
        base = rng.integers(0, 200, 3)
        for c in range(3):
            out[t, :, :, c] = (base[c] + (x * (c + 1) + y * (t + 1)) // 8) % 256
    return out


def steps_flags(n: int) -> dict:
    return {
        "is_first": [t == 0 for t in range(n)],
        "is_last": [t == n - 1 for t in range(n)],
        "is_terminal": [t == n - 1 for t in range(n)],
    }


def bridge_episode(rng: np.random.Generator, i: int, n: int) -> dict:
    gripper = np.array([1.0, 0.97, 0.6, 0.3, 0.02, 0.0, 0.5, 0.99][:n], np.float32)
    action = rng.normal(size=(n, 7)).astype(np.float32)
    action[:, 6] = gripper
    images = {f"image_{c}": np.zeros((n, 256, 256, 3), np.uint8) for c in range(1, 4)}  # small files
    images["image_0"] = frames(rng, n, (256, 256, 3))
    steps = [
        {
            "observation": {**{k: v[t] for k, v in images.items()}, "state": rng.normal(size=7).astype(np.float32)},
            "action": action[t],
            "language_instruction": f"put the spoon in the pot {i}",
            "language_embedding": np.zeros(512, np.float32),
            "reward": 0.0,
            "discount": 1.0,
            **{k: v[t] for k, v in steps_flags(n).items()},
        }
        for t in range(n)
    ]
    meta = {
        "file_path": f"raw/traj{i}",
        "episode_id": i,
        **{f"has_image_{c}": True for c in range(4)},
        "has_language": True,
    }
    return {"steps": steps, "episode_metadata": meta}


def fractal_episode(rng: np.random.Generator, i: int, n: int) -> dict:
    relative = np.array([0.0, 0.0, 1.0, 0.0, 0.0, -1.0, 0.0][:n], np.float32)
    image_frames = frames(rng, n, (256, 320, 3))
    steps = []
    for t in range(n):
        steps.append(
            {
                "action": {
                    "base_displacement_vector": np.zeros(2, np.float32),
                    "base_displacement_vertical_rotation": np.zeros(1, np.float32),
                    "gripper_closedness_action": relative[t : t + 1],
                    "rotation_delta": rng.normal(size=3).astype(np.float32),
                    "terminate_episode": np.array([0, 1, 0] if t < n - 1 else [1, 0, 0], np.int32),
                    "world_vector": rng.normal(size=3).astype(np.float32),
                },
                **{k: v[t] for k, v in steps_flags(n).items()},
                "observation": {
                    "base_pose_tool_reached": rng.normal(size=7).astype(np.float32),
                    "gripper_closed": np.array([float(t >= 3)], np.float32),
                    "gripper_closedness_commanded": relative[t : t + 1],
                    "height_to_bottom": np.ones(1, np.float32),
                    "image": image_frames[t],
                    "natural_language_embedding": np.zeros(512, np.float32),
                    "natural_language_instruction": f"pick coke can {i}",
                    "orientation_box": np.zeros((2, 3), np.float32),
                    "orientation_start": np.zeros(4, np.float32),
                    "robot_orientation_positions_box": np.zeros((3, 3), np.float32),
                    "rotation_delta_to_go": np.zeros(3, np.float32),
                    "src_rotation": np.zeros(4, np.float32),
                    "vector_to_go": np.zeros(3, np.float32),
                    "workspace_bounds": np.zeros((3, 3), np.float32),
                },
                "reward": 0.0,
            }
        )
    attributes = {
        **{k: 0 for k in ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")},
        **{
            f"{k}_name": ""
            for k in ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")
        },
    }
    aspects = {k: True for k in ("already_success", "feasible", "has_aspects", "success", "undesirable")}
    return {"steps": steps, "aspects": aspects, "attributes": attributes}


def libero_episode(rng: np.random.Generator, i: int, n: int) -> dict:
    images, wrist = frames(rng, n, (256, 256, 3)), frames(rng, n, (256, 256, 3))
    steps = [
        {
            "observation": {
                "image": images[t],
                "wrist_image": wrist[t],
                "state": rng.normal(size=8).astype(np.float32),
                "joint_state": rng.normal(size=7).astype(np.float32),
            },
            "action": np.concatenate([rng.normal(size=6), [1.0 if t % 3 else -1.0]]).astype(np.float32),
            "discount": 1.0,
            "reward": float(t == n - 1),
            **{k: v[t] for k, v in steps_flags(n).items()},
            "language_instruction": f"put the bowl on the plate {i}",
        }
        for t in range(n)
    ]
    return {"steps": steps, "episode_metadata": {"file_path": f"libero_spatial/demo_{i}.hdf5"}}


def builder(name: str, version: str, features: F.FeaturesDict, make, lengths: list[int]) -> type:
    """A TFDS builder class whose registered name is `name` (TFDS derives it from the CamelCase class name)."""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(len(lengths))
        for i, n in enumerate(lengths):
            yield i, make(rng, i, n)

    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    methods = {"VERSION": tfds.core.Version(version), "_info": _info, "_split_generators": _split_generators}
    return type(camel, (tfds.core.GeneratorBasedBuilder,), {**methods, "_generate_examples": _generate_examples})


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    specs = [
        ("bridge_dataset", "1.0.0", BRIDGE, bridge_episode, [8, 5, 6], "observation/image_0"),
        ("fractal20220817_data", "0.1.0", FRACTAL, fractal_episode, [7, 4], "observation/image"),
        ("libero_spatial_no_noops", "1.0.0", LIBERO, libero_episode, [6, 5], "observation/image"),
    ]
    for name, version, features, make, lengths, camera in specs:
        b = builder(name, version, features, make, lengths)(data_dir=str(out))
        b.download_and_prepare()
        folder = Path(b.data_dir)
        episodes = []
        for episode in tfds.as_numpy(tfds.builder_from_directory(str(folder)).as_dataset(split="train")):
            steps = list(episode["steps"])
            record = {"steps": len(steps)}
            for key in (
                "action",
                "observation/state",
                "observation/base_pose_tool_reached",
                "observation/gripper_closed",
                "action/world_vector",
                "action/rotation_delta",
                "action/gripper_closedness_action",
                "language_instruction",
                "observation/natural_language_instruction",
            ):
                try:
                    values = [s for s in steps]
                    for part in key.split("/"):
                        values = [v[part] for v in values]
                except (KeyError, IndexError, TypeError):
                    continue
                record[key] = [v.decode() if isinstance(v, bytes) else np.asarray(v).tolist() for v in values]
            frames_ = np.stack([s[camera.split("/")[0]][camera.split("/")[1]] for s in steps])
            record["image_shape"] = list(frames_.shape)
            record["image_mean"] = frames_.reshape(len(steps), -1).mean(axis=1).tolist()
            episodes.append(record)
        expected[name] = {"folder": str(folder.relative_to(out)), "episodes": episodes}
    (out / "expected.json").write_text(json.dumps(expected, indent=1, default=lambda a: np.asarray(a).tolist()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
