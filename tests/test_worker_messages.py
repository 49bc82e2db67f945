"""What crosses between the engine and env workers in another Python environment (`eval.messages`)."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from qdepth_bench.core.policy import ObservationBatch, PolicyRequirements
from qdepth_bench.core.protocol import EpisodeSpec
from qdepth_bench.eval.episode import EpisodeResult
from qdepth_bench.eval.messages import pack, unpack
from qdepth_bench.eval.videos import VideoSink
from qdepth_bench.registry.suites import suite_registry


def test_every_message_kind_comes_back_equal_and_typed():
    spec = suite_registry().suites["simpler_widowx"].with_backend("simpler_env")
    episode = EpisodeSpec(spec.name, 0, 3, 12345, {"mode": "grid", "episode_id": 3, "robot_pose": [0.1, 0.2, 0.0]})
    setup = (spec, PolicyRequirements(cameras=("main",), privileged=True), "run1", (VideoSink(Path("/tmp/v")),))
    back = unpack(pack(setup))
    assert back == setup and isinstance(back, tuple) and back[0].protocol_hash() == spec.protocol_hash()
    assert unpack(pack(("episode", episode))) == ("episode", episode)
    chunk = np.linspace(-1, 1, 14, dtype=np.float32).reshape(2, 7)
    kind, actions = unpack(pack(("chunk", chunk)))
    assert kind == "chunk" and actions.dtype == np.float32 and np.array_equal(actions, chunk)
    obs = ObservationBatch(
        [episode.key],
        {"main": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)[:1]},
        np.array([[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0]]),
        ["put carrot on plate"],
        privileged=[{"source": np.array([0.1, 0.2, 0.9]), "source_yaw": 0.25}],
    )
    _, key, got, seconds = unpack(pack(("obs", episode.key, obs, 0.5)))
    assert key == episode.key and seconds == 0.5 and got.state.dtype == np.float64
    assert np.array_equal(got.images["main"], obs.images["main"]) and got.images["main"].flags.writeable
    assert np.array_equal(got.privileged[0]["source"], obs.privileged[0]["source"])
    result = EpisodeResult(episode, "put_carrot_on_plate", "success", steps=60, metrics={"stand_in_table": True})
    assert unpack(pack(("end", result))) == ("end", result)


def test_only_project_dataclasses_are_built_from_a_message():
    forged = msgpack.packb({"__dataclass__": "subprocess:Popen", "fields": {"args": ["true"]}})
    with pytest.raises(ValueError, match="not a qdepth_bench class"):
        unpack(forged)
    with pytest.raises(TypeError, match="cannot send"):
        pack(("obs", object()))
