"""The tensorflow-free RLDS writer (`datasets/rlds_writer.py`) and the SIMPLER WidowX demonstration sink that
uses it: framing and CRCs as TFRecord defines them (checked against the file tensorflow-datasets wrote in
tests/data/rlds), features.json as TFDS writes it, and episodes that the project's reader reads back."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from qdepth_bench.core.policy import TaskInfo
from qdepth_bench.core.protocol import EpisodeSpec
from qdepth_bench.core.sim import RecordedEpisode
from qdepth_bench.datasets.rlds import RldsSource, parse_example
from qdepth_bench.datasets.rlds_writer import BUILDERS, crc32c, encode_example, features_json, masked_crc
from qdepth_bench.sims.simpler.demo_writer import RldsDemoSink

FIXTURES = Path(__file__).parent / "data" / "rlds"


def framed_records(data: bytes) -> int:
    """How many records a TFRecord file holds, asserting both masked CRCs of each (what TFDS's reader checks)."""
    offset = records = 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        assert struct.unpack_from("<I", data, offset + 8)[0] == masked_crc(data[offset : offset + 8])
        payload = data[offset + 12 : offset + 12 + length]
        assert struct.unpack_from("<I", data, offset + 12 + length)[0] == masked_crc(payload)
        offset += 16 + length
        records += 1
    return records


def test_crc32c_and_the_masked_crcs_of_a_file_tfds_wrote():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    data = (FIXTURES / "bridge_dataset/1.0.0/bridge_dataset-train.tfrecord-00000-of-00001").read_bytes()
    assert framed_records(data) == 3


@pytest.mark.parametrize("layout", ["bridge", "fractal"])
def test_features_json_is_what_tfds_wrote_for_the_same_layout(layout):
    name, version, fields = BUILDERS[layout]
    assert features_json(fields) == json.loads((FIXTURES / name / version / "features.json").read_text())


def test_an_example_reads_back_with_every_value_kind():
    values = {
        "b": [b"x", b""],
        "f": np.array([1.5, -2.0], np.float32),
        "i": np.array([0, 1, -3, 2**40], np.int64),
    }
    parsed = parse_example(encode_example(values))
    assert parsed["b"] == [b"x", b""]
    np.testing.assert_array_equal(parsed["f"], values["f"])
    np.testing.assert_array_equal(parsed["i"], values["i"])


def recorded(task_id: int, index: int, steps: int, status: str = "success") -> RecordedEpisode:
    """A finished WidowX episode as the env worker hands it to a sink (rows from `ManiSkill3Env.demo_frame`)."""
    rng = np.random.default_rng(index)
    rows = [
        {
            "image": np.full((48, 64, 3), 10 * t, np.uint8),
            "state": rng.normal(size=7).astype(np.float32),
            "tool_pose": rng.normal(size=8).astype(np.float32),
        }
        for t in range(steps)
    ]
    actions = [np.r_[rng.normal(size=6) * 0.01, float(t < steps // 2)] for t in range(steps)]
    noop = (0.0,) * 7
    task = TaskInfo(
        "simpler_widowx", task_id, "put_carrot_on_plate", "put carrot on plate", "widowx", noop, noop, noop, ""
    )
    episode = EpisodeSpec("simpler_widowx", task_id, index, seed=index)
    return RecordedEpisode(episode, task, "run", status, 5, [], rows, actions)


@pytest.mark.parametrize("fmt", ["bridge_rlds", "fractal_rlds"])
def test_the_demo_sink_writes_a_builder_folder_the_reader_reads(tmp_path, fmt):
    sink = RldsDemoSink.for_tasks(tmp_path, None, [0, 3], fmt)
    episodes = [recorded(0, 0, 6), recorded(0, 1, 5, "failure"), recorded(0, 2, 4), recorded(3, 0, 5)]
    written = [sink.write(e) for e in episodes]
    assert written[1] is None and all(written[i] for i in (0, 2, 3))  # failures are not demonstrations
    assert [sink.merge(t, 5) for t in (0, 3)] == [2, 1]
    layout = sink.layout
    name, version, _ = BUILDERS[layout]
    folder = tmp_path / name / version
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info["splits"][0]["shardLengths"] == ["2", "1"]
    source = RldsSource(folder, layout, image_size=32)
    assert [n for _, n in source.episodes()] == ([5, 3, 4] if layout == "bridge" else [6, 4, 5])
    state, actions = source.lowdim("episode_0")
    first = episodes[0]
    if layout == "bridge":  # movement relabelled from reached states, the gripper as commanded
        raw = np.stack([r["state"] for r in first.demo_rows])
        np.testing.assert_allclose(state, raw[:-1])
        np.testing.assert_allclose(actions[:, :6], raw[1:, :6] - raw[:-1, :6], atol=1e-6)
    else:
        np.testing.assert_allclose(state, np.stack([r["tool_pose"] for r in first.demo_rows]))
        np.testing.assert_allclose(actions[:, :6], np.stack(first.actions)[:, :6], atol=1e-6)
    gripper = [1, 1, 1, 0, 0] if layout == "bridge" else [1, 1, 1, 0, 0, 0]  # Bridge drops the last step
    np.testing.assert_array_equal(actions[:, 6], gripper)
    assert source.instruction("episode_2") == "put carrot on plate"
    frames = source.episode("episode_0").images["main"]
    assert frames.shape == (len(actions), 32, 32, 3) and abs(int(frames[2].mean()) - 20) <= 2  # JPEG round trip
    shards = sorted(folder.glob(f"{name}-train.tfrecord-*"))
    assert [framed_records(p.read_bytes()) for p in shards] == [2, 1]
