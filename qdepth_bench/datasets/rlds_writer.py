"""Open-X RLDS builder folders written without tensorflow: the Bridge V2 (`bridge_dataset`) and Fractal
(`fractal20220817_data`) layouts, as `datasets/rlds.py` and TFDS's own reader read them.

What a TFDS builder folder holds, and so what is written here:
  <name>/<version>/dataset_info.json    name, version, file format and each split's shard lengths
  <name>/<version>/features.json        the feature tree (TFDS's JSON form: FeaturesDict, Dataset, Image...)
  <name>/<version>/<name>-train.tfrecord-0000i-of-0000n   the episodes, one serialised tf.train.Example each
A TFRecord frames each record as: length (uint64 LE), masked CRC32C of those 8 bytes, the data, masked
CRC32C of the data. TFDS's reader (and tf.data) checks both CRCs, so they are computed here; the project's
own reader (`rlds._records`) skips them, as it must to read Bridge's hundreds of gigabytes in Python.

An episode is one Example whose keys are the feature paths joined with "/": a step field holds every step's
value one after the other (T JPEG strings for an image, T x 7 floats for a 7-vector), booleans and int32 are
stored as int64, text as bytes: exactly the encoding TFDS's `FeaturesDict`/`Dataset` serialisers produce.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# --- TFRecord framing ------------------------------------------------------------------------------------


def _crc32c_table() -> tuple[int, ...]:
    """The byte table of CRC-32C (Castagnoli, reflected polynomial 0x82F63B78)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of `data` (pure Python: about 0.3 s per MB here, enough for datasets made on one machine)."""
    crc, table = 0xFFFFFFFF, _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC: the CRC rotated right by 15 bits plus a constant (so CRCs of CRCs differ)."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
    """One framed TFRecord record."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc(length)) + payload + struct.pack("<I", masked_crc(payload))


# --- tf.train.Example in the protobuf wire format --------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf writes them
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value: list[bytes] | np.ndarray) -> bytes:
    """A Feature: BytesList (1) for a list of bytes, else FloatList (2) or Int64List (3), packed."""
    if isinstance(value, list):
        return _delimited(1, b"".join(_delimited(1, v) for v in value))
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return _delimited(2, _delimited(1, array.astype("<f4").tobytes()))
    return _delimited(3, _delimited(1, b"".join(_varint(int(v)) for v in array.reshape(-1))))


def encode_example(features: dict[str, list[bytes] | np.ndarray]) -> bytes:
    """A serialised tf.train.Example: Features (1) is a map of string -> Feature, entries in key order."""
    entries = b"".join(
        _delimited(1, _delimited(1, key.encode()) + _delimited(2, _feature(value)))
        for key, value in sorted(features.items())
    )
    return _delimited(1, entries)


# --- the feature tree ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One leaf of the feature tree: an `image` (JPEG), a `tensor` (a `scalar` when shape is ()) or `text`."""

    kind: str
    dtype: str = "float32"
    shape: tuple[int, ...] = ()

    def encode(self, values: Iterable[Any]) -> list[bytes] | np.ndarray:
        """Every step's (or the episode's one) value of this field, as the Example stores them."""
        if self.kind == "image":
            return [_jpeg(np.asarray(v, np.uint8)) for v in values]
        if self.kind == "text":
            return [str(v).encode() for v in values]
        array = np.stack([np.asarray(v, dtype=self.dtype).reshape(self.shape) for v in values])
        return array.astype(np.float32) if self.dtype.startswith("float") else array.astype(np.int64)

    def describe(self) -> dict[str, Any]:
        """The leaf as TFDS's features.json writes it."""
        shape = {"dimensions": [str(n) for n in self.shape]} if self.shape else {}
        if self.kind == "image":
            return {
                "image": {"dtype": "uint8", "encodingFormat": "jpeg", "shape": shape},
                "pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
            }
        if self.kind == "text":
            return {"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text", "text": {}}
        module = "tensor_feature.Tensor" if self.shape else "scalar.Scalar"
        return {
            "pythonClassName": f"tensorflow_datasets.core.features.{module}",
            "tensor": {"dtype": self.dtype, "encoding": "none", "shape": shape},
        }


def _jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _flags() -> dict[str, Field]:
    return {k: Field("tensor", "bool") for k in ("is_first", "is_last", "is_terminal")}


def _floats(*shape: int) -> Field:
    return Field("tensor", "float32", shape)


#: Bridge V2 as Berkeley's TFDS builder declares it (feature path -> leaf)
BRIDGE: dict[str, Field] = {
    **{f"steps/observation/image_{i}": Field("image", shape=(256, 256, 3)) for i in range(4)},
    "steps/observation/state": _floats(7),
    "steps/action": _floats(7),
    "steps/language_instruction": Field("text"),
    "steps/language_embedding": _floats(512),
    "steps/reward": _floats(),
    "steps/discount": _floats(),
    **{f"steps/{k}": v for k, v in _flags().items()},
    "episode_metadata/file_path": Field("text"),
    "episode_metadata/episode_id": Field("tensor", "int32"),
    **{f"episode_metadata/has_image_{i}": Field("tensor", "bool") for i in range(4)},
    "episode_metadata/has_language": Field("tensor", "bool"),
}

#: Fractal (RT-1) as the TFDS catalog declares it
FRACTAL: dict[str, Field] = {
    **{f"aspects/{k}": Field("tensor", "bool") for k in ("already_success", "feasible", "has_aspects", "success")},
    "aspects/undesirable": Field("tensor", "bool"),
    **{
        f"attributes/{k}{suffix}": Field("text") if suffix else Field("tensor", "int64")
        for k in ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")
        for suffix in ("", "_name")
    },
    "steps/action/base_displacement_vector": _floats(2),
    "steps/action/base_displacement_vertical_rotation": _floats(1),
    "steps/action/gripper_closedness_action": _floats(1),
    "steps/action/rotation_delta": _floats(3),
    "steps/action/terminate_episode": Field("tensor", "int32", (3,)),
    "steps/action/world_vector": _floats(3),
    **{f"steps/{k}": v for k, v in _flags().items()},
    "steps/observation/base_pose_tool_reached": _floats(7),
    "steps/observation/gripper_closed": _floats(1),
    "steps/observation/gripper_closedness_commanded": _floats(1),
    "steps/observation/height_to_bottom": _floats(1),
    "steps/observation/image": Field("image", shape=(256, 320, 3)),
    "steps/observation/natural_language_embedding": _floats(512),
    "steps/observation/natural_language_instruction": Field("text"),
    "steps/observation/orientation_box": _floats(2, 3),
    "steps/observation/orientation_start": _floats(4),
    "steps/observation/robot_orientation_positions_box": _floats(3, 3),
    "steps/observation/rotation_delta_to_go": _floats(3),
    "steps/observation/src_rotation": _floats(4),
    "steps/observation/vector_to_go": _floats(3),
    "steps/observation/workspace_bounds": _floats(3, 3),
    "steps/reward": _floats(),
}

#: layout -> (TFDS dataset name, version, feature tree)
BUILDERS: dict[str, tuple[str, str, dict[str, Field]]] = {
    "bridge": ("bridge_dataset", "1.0.0", BRIDGE),
    "fractal": ("fractal20220817_data", "0.1.0", FRACTAL),
}


def features_json(fields: dict[str, Field]) -> dict[str, Any]:
    """The feature tree in TFDS's JSON form: nested FeaturesDicts, `steps` a Dataset of unknown length."""
    tree: dict[str, Any] = {}
    for path, leaf in fields.items():
        node = tree
        *parents, name = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = leaf

    def describe(node: dict[str, Any] | Field, name: str = "") -> dict[str, Any]:
        if isinstance(node, Field):
            return node.describe()
        inner = {
            "featuresDict": {"features": {k: describe(v, k) for k, v in sorted(node.items())}},
            "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
        }
        if name != "steps":
            return inner
        return {
            "pythonClassName": "tensorflow_datasets.core.features.dataset_feature.Dataset",
            "sequence": {"feature": inner, "length": "-1"},
        }

    return describe(tree)


def episode_record(layout: str, steps: dict[str, list[Any]], episode: dict[str, Any]) -> bytes:
    """One framed record of an episode: `steps` maps each step field (path below `steps/`) to its T values,
    `episode` each episode-level field (full path) to its value. Every field of the layout must be given."""
    fields = BUILDERS[layout][2]
    given = {f"steps/{k}" for k in steps} | set(episode)
    if given != set(fields):
        missing, extra = sorted(set(fields) - given), sorted(given - set(fields))
        raise ValueError(f"{layout} episode: missing fields {missing}, unknown fields {extra}")
    values = {f"steps/{k}": fields[f"steps/{k}"].encode(v) for k, v in steps.items()}
    values |= {k: fields[k].encode([v]) for k, v in episode.items()}
    return tfrecord(encode_example(values))


def builder_folder(root: Path, layout: str) -> Path:
    """Where the layout's builder folder goes under `root` (TFDS's data_dir layout: <name>/<version>)."""
    name, version, _ = BUILDERS[layout]
    return root / name / version


def write_builder(root: Path, layout: str, shards: list[bytes]) -> Path:
    """Write the builder folder of `layout` under `root` from whole shards (each the framed records of its
    episodes, empty ones left out), replacing what was there: shard files, dataset_info.json and
    features.json. A shard appears under its name only once complete."""
    name, version, fields = BUILDERS[layout]
    folder = builder_folder(root, layout)
    folder.mkdir(parents=True, exist_ok=True)
    kept = [shard for shard in shards if shard]
    paths = [folder / f"{name}-train.tfrecord-{i:05d}-of-{len(kept):05d}" for i in range(len(kept))]
    for stale in set(folder.glob(f"{name}-train.tfrecord-*")) - set(paths):
        stale.unlink()
    for path, shard in zip(paths, kept, strict=True):
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(shard)
        partial.replace(path)
    info = {
        "fileFormat": "tfrecord",
        "moduleName": "qdepth_bench.datasets.rlds_writer",
        "name": name,
        "splits": [
            {
                "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                "name": "train",
                "numBytes": str(sum(len(shard) for shard in kept)),
                "shardLengths": [str(count_records(shard)) for shard in kept],
            }
        ],
        "version": version,
    }
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2))
    (folder / "features.json").write_text(json.dumps(features_json(fields), indent=2))
    return folder


def count_records(data: bytes) -> int:
    """How many framed records `data` holds."""
    count, offset = 0, 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 16 + length
        count += 1
    return count
