"""Open-X Embodiment RLDS datasets (Bridge V2 `bridge_dataset`, Fractal `fractal20220817_data`, openvla's
`modified_libero_rlds`) read from a TFDS builder folder without tensorflow.

A TFDS builder folder holds `dataset_info.json`, `features.json` and TFRecord shards
`<name>-<split>.tfrecord-NNNNN-of-MMMMM`. Each record is one episode serialised as a `tf.train.Example`
whose features are the episode's fields flattened with "/" (`steps/observation/image_0`): a step field
holds the values of every step one after the other (T JPEG strings for an image, T x 7 floats for a
7-vector). Records are read here with the TFRecord framing and the protobuf wire format directly, so
tensorflow (about 1 GB) is never needed to train on these datasets.

Each layout follows Octo's and open-pi-zero's `oxe_standardization_transforms` (identical for these two):
  bridge   main camera `image_0`; state = `observation/state` (7); action = the first 6 dimensions, gripper
           binarised (`binarize_gripper_actions`: > 0.95 open = 1, < 0.05 closed = 0, values in between take
           the next decided value), then the 6 movement dimensions relabelled from reached states
           (state[t+1] - state[t], the last step dropped);
  fractal  main camera `image`; instruction `observation/natural_language_instruction`; state =
           `base_pose_tool_reached` (7) + `gripper_closed` (1); action = `world_vector` + `rotation_delta` +
           the relative `gripper_closedness_action` made absolute (`rel2abs_gripper_actions`: 1 open, 0 closed);
  libero   openvla's modified_libero_rlds (`libero_*_no_noops`): main camera `image`, wrist `wrist_image`,
           state (8), action (7) kept as LIBERO's own (-1 open, +1 close), so a policy trained on it drives
           the LIBERO suites like one trained on LIBERO's HDF5 files. Its frames were turned upright when it
           was made (no rotation).
The index (episode lengths, instruction, state and actions) costs one pass over the records; it is kept
beside the dataset in `qdepth_index.npz` so later trainings start at once.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets.episode import Episode, as_policy_sees

#: What each layout reads: camera roles, instruction, state and action fields (concatenated in order).
LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "bridge": {
        "main": ("steps/observation/image_0",),
        "wrist": ("steps/observation/image_1",),
        "instruction": ("steps/language_instruction",),
        "state": ("steps/observation/state",),
        "actions": ("steps/action",),
    },
    "fractal": {
        "main": ("steps/observation/image",),
        "instruction": ("steps/observation/natural_language_instruction",),
        "state": ("steps/observation/base_pose_tool_reached", "steps/observation/gripper_closed"),
        "actions": (
            "steps/action/world_vector",
            "steps/action/rotation_delta",
            "steps/action/gripper_closedness_action",
        ),
    },
    "libero": {
        "main": ("steps/observation/image",),
        "wrist": ("steps/observation/wrist_image",),
        "instruction": ("steps/language_instruction",),
        "state": ("steps/observation/state",),
        "actions": ("steps/action",),
    },
}
INDEX_FILE = "qdepth_index.npz"


def binarize_gripper(actions: np.ndarray) -> np.ndarray:
    """Bridge's continuous gripper command (1 open .. 0 closed) made 0/1: values above 0.95 are open, below
    0.05 closed, and a value in between takes the next decided value (the last value where none follows)."""
    out = np.empty(len(actions), dtype=np.float32)
    carry = float(actions[-1])
    for i in range(len(actions) - 1, -1, -1):
        if actions[i] > 0.95 or actions[i] < 0.05:
            carry = float(actions[i] > 0.95)
        out[i] = carry
    return out


def relative_to_absolute_gripper(actions: np.ndarray) -> np.ndarray:
    """Fractal's relative gripper command (+1 close, -1 open, 0 hold) as an absolute one (1 open, 0 closed):
    each step keeps the last command given; before the first, the gripper is in the state opposite to that
    command (open when the episode never commands it)."""
    moves = np.where(actions < -0.1, 1, np.where(actions > 0.1, -1, 0))
    given = np.flatnonzero(moves)
    state = -moves[given[0]] if len(given) else 1
    out = np.empty(len(actions), dtype=np.float32)
    for i, move in enumerate(moves):
        state = move if move != 0 else state
        out[i] = state / 2 + 0.5
    return out


def standardize(layout: str, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(state, actions, frames kept) in the layout's convention (see the module doc)."""
    if layout == "bridge":
        gripper = binarize_gripper(actions[:, -1])
        if len(state) < 2:
            return state[:0], actions[:0], 0
        movement = state[1:, :6] - state[:-1, :6]
        return state[:-1], np.concatenate([movement, gripper[:-1, None]], axis=1).astype(np.float32), len(state) - 1
    if layout == "fractal":
        gripper = relative_to_absolute_gripper(actions[:, -1])
        return state, np.concatenate([actions[:, :-1], gripper[:, None]], axis=1), len(state)
    return state, actions, len(state)


# --- TFRecord and tf.train.Example, read directly -------------------------------------------------------


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, payload) of each record of a TFRecord file (length, its CRC, data, its CRC)."""
    with path.open("rb") as f:
        while True:
            offset = f.tell()
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise UserError(f"{path} ends inside a record; the shard is truncated, download it again.")
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            f.read(4)
            yield offset, data


def _record_at(path: Path, offset: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        (length,) = struct.unpack("<Q", f.read(12)[:8])
        return f.read(length)


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes | memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message: varints as int, length-delimited as bytes."""
    view, pos = memoryview(data), 0
    while pos < len(view):
        tag, pos = _varint(view, pos)
        number, wire = tag >> 3, tag & 7
        value: Any
        if wire == 0:
            value, pos = _varint(view, pos)
        elif wire == 2:
            size, pos = _varint(view, pos)
            value, pos = view[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = view[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = view[pos : pos + 8], pos + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _feature(data: memoryview, wanted: set[str] | None) -> Any:
    """A Feature message: a list of bytes, a float32 array or an int64 array."""
    for kind, _, payload in _fields(data):
        if kind == 1:  # BytesList
            return [bytes(v) for _, _, v in _fields(payload)]
        values = [(wire, v) for _, wire, v in _fields(payload)]
        if kind == 2:  # FloatList: packed (wire 2) or one float per field (wire 5)
            return np.frombuffer(b"".join(bytes(v) for _, v in values), dtype="<f4").copy()
        if kind == 3:  # Int64List: packed varints or one per field
            ints: list[int] = []
            for wire, v in values:
                if wire == 2:
                    pos = 0
                    while pos < len(v):
                        n, pos = _varint(v, pos)
                        ints.append(n)
                else:
                    ints.append(v)
            return np.array([n - (1 << 64) if n >= 1 << 63 else n for n in ints], dtype=np.int64)
    return []


def parse_example(data: bytes, wanted: set[str] | None = None) -> dict[str, Any]:
    """The features of a serialised tf.train.Example (only `wanted` keys when given)."""
    out: dict[str, Any] = {}
    for number, _, features in _fields(data):
        if number != 1:
            continue
        for _, _, entry in _fields(features):
            key, value = "", None
            for field, _, part in _fields(entry):
                if field == 1:
                    key = bytes(part).decode()
                elif field == 2:
                    value = part
            if value is not None and (wanted is None or key in wanted):
                out[key] = _feature(value, wanted)
    return out


# --- the builder folder ----------------------------------------------------------------------------------


class RldsSource:
    """An RLDS (TFDS) builder folder read one episode at a time."""

    def __init__(
        self,
        builder_dir: Path,
        layout: str = "bridge",
        image_size: int = 224,
        keys: dict[str, tuple[str, ...]] | None = None,
        rotation_deg: int = 0,
        resize: str = "bilinear",
        split: str = "train",
        cameras: tuple[str, ...] = ("main",),
    ) -> None:
        if layout not in LAYOUTS and not keys:
            raise UserError(f"unknown RLDS layout '{layout}': {', '.join(LAYOUTS)}, or give data.keys in the recipe.")
        self.path, self.layout, self.image_size = Path(builder_dir), layout, image_size
        self.rotation_deg, self.resize, self.split, self.cameras = rotation_deg, resize, split, cameras
        self.fields = {**LAYOUTS.get(layout, {}), **(keys or {})}
        self.shards = self._shards()
        self._index: dict[str, Any] | None = None

    def _shards(self) -> list[Path]:
        info_path = self.path / "dataset_info.json"
        if not info_path.is_file():
            raise UserError(
                f"{self.path} is not a TFDS builder folder (no dataset_info.json); give the version folder."
            )
        info = json.loads(info_path.read_text())
        shards = sorted(self.path.glob(f"{info.get('name', '*')}-{self.split}.tfrecord*"))
        if not shards:
            raise UserError(f"{self.path} has no {self.split} TFRecord shards; download them beside dataset_info.json.")
        return shards

    def _steps(self, example: dict[str, Any], record: str) -> int:
        for key in (*self.fields["actions"], *self.fields["state"]):
            if key not in example:
                raise UserError(
                    f"{record} has no field {key} (fields: {', '.join(sorted(example))}); set data.layout "
                    f"({', '.join(LAYOUTS)}) or data.keys."
                )
        firsts = example.get("steps/is_first")
        return len(firsts) if firsts is not None else len(example[self.fields["actions"][0]])

    def _lowdim(self, example: dict[str, Any], steps: int) -> tuple[np.ndarray, np.ndarray]:
        def joined(keys: tuple[str, ...]) -> np.ndarray:
            return np.concatenate([np.asarray(example[k], np.float32).reshape(steps, -1) for k in keys], axis=1)

        return joined(self.fields["state"]), joined(self.fields["actions"])

    def index(self) -> dict[str, Any]:
        """Per episode: shard, byte offset, frames kept, instruction, state and actions (standardised); read
        from `qdepth_index.npz` beside the dataset when it is newer than every shard, else made and saved."""
        if self._index is not None:
            return self._index
        cache = self.path / f"{self.split}-{self.layout}-{INDEX_FILE}"
        newest = max(p.stat().st_mtime for p in self.shards)
        if cache.is_file() and cache.stat().st_mtime >= newest:
            with np.load(cache, allow_pickle=False) as saved:
                self._index = {k: saved[k] for k in saved.files}
            return self._index
        shard, offset, length, text, states, actions = [], [], [], [], [], []
        lowdim = {*self.fields["state"], *self.fields["actions"], *self.fields["instruction"], "steps/is_first"}
        for s, path in enumerate(self.shards):
            for position, record in _records(path):
                example = parse_example(record, lowdim)
                steps = self._steps(example, f"{path}@{position}")
                state, action = self._lowdim(example, steps)
                state, action, kept = standardize(self.layout, state, action)
                instructions = example.get(self.fields["instruction"][0], [b""])
                shard.append(s)
                offset.append(position)
                length.append(kept)
                text.append(instructions[0].decode() if instructions else "")
                states.append(state)
                actions.append(action)
        self._index = {
            "shard": np.array(shard),
            "offset": np.array(offset),
            "length": np.array(length),
            "instruction": np.array(text, dtype=str),
            "state": np.concatenate(states) if states else np.zeros((0, 0), np.float32),
            "actions": np.concatenate(actions) if actions else np.zeros((0, 0), np.float32),
        }
        try:
            with cache.open("wb") as f:
                np.savez(f, **self._index)
        except OSError:
            pass  # a read-only dataset is indexed again next time
        return self._index

    def episodes(self) -> list[tuple[str, int]]:
        return [(f"episode_{i}", int(n)) for i, n in enumerate(self.index()["length"]) if n > 0]

    def _number(self, key: str) -> int:
        return int(key.removeprefix("episode_"))

    def instruction(self, key: str) -> str:
        return str(self.index()["instruction"][self._number(key)])

    def lowdim(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        index, i = self.index(), self._number(key)
        if "start" not in index:  # where each episode's rows begin in the concatenated arrays
            index["start"] = np.concatenate([[0], np.cumsum(index["length"])])
        start, end = int(index["start"][i]), int(index["start"][i + 1])
        return index["state"][start:end], index["actions"][start:end]

    def episode(self, key: str) -> Episode:
        from PIL import Image

        index, i = self.index(), self._number(key)
        path = self.shards[int(index["shard"][i])]
        cameras = {role: self.fields[role][0] for role in self.cameras}
        example = parse_example(_record_at(path, int(index["offset"][i])), set(cameras.values()))
        state, actions = self.lowdim(key)
        images = {}
        for role, field in cameras.items():
            if field not in example:
                raise UserError(f"{path}: episode {i} has no camera field {field}; set data.keys.{role}.")
            encoded = example[field][: len(actions)]  # Bridge's relabelling drops the last step
            frames = (np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in encoded)
            images[role] = as_policy_sees(frames, self.rotation_deg, self.image_size, self.resize)
        return Episode(self.instruction(key), images, state, actions, source=f"{self.path}:{key}")
