"""What crosses between the engine and env workers in another Python environment (`eval.messages`)."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from qdepth_bench.core.policy import ObservationBatch, PolicyRequirements
from qdepth_bench.core.protocol import EpisodeSpec
from qdepth_bench.eval.episode import EpisodeResult
from qdepth_bench.eval.messages import (
    Chunk,
    Died,
    Ended,
    Observation,
    Setup,
    StartEpisode,
    WorkerLaunch,
    WorkerSettings,
    pack,
    unpack,
)
from qdepth_bench.eval.videos import VideoSink
from qdepth_bench.registry.suites import suite_registry


def test_every_message_kind_comes_back_equal_and_typed():
    spec = suite_registry().suites["simpler_widowx"].with_backend("simpler_env")
    episode = EpisodeSpec(spec.name, 0, 3, 12345, {"mode": "grid", "episode_id": 3, "robot_pose": [0.1, 0.2, 0.0]})
    settings = WorkerSettings(
        spec, PolicyRequirements(cameras=("main",), privileged=True), "run1", (VideoSink(Path("/tmp/v")),)
    )
    for setup in (WorkerLaunch(settings, hold_output=True), Setup(settings)):
        back = unpack(pack(setup))
        assert back == setup and isinstance(back.settings.sinks, tuple)
        assert back.settings.spec.protocol_hash() == spec.protocol_hash()
    assert unpack(pack(StartEpisode(episode))) == StartEpisode(episode)
    chunk = np.linspace(-1, 1, 14, dtype=np.float32).reshape(2, 7)
    back_chunk = unpack(pack(Chunk(chunk)))
    actions = back_chunk.actions
    assert back_chunk.kind == "chunk" and actions.dtype == np.float32 and np.array_equal(actions, chunk)
    obs = ObservationBatch(
        [episode.key],
        {"main": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)[:1]},
        np.array([[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0]]),
        ["put carrot on plate"],
        privileged=[{"source": np.array([0.1, 0.2, 0.9]), "source_yaw": 0.25}],
    )
    observation = unpack(pack(Observation(episode.key, obs, 0.5)))
    key, got, seconds = observation.key, observation.observation, observation.seconds
    assert key == episode.key and seconds == 0.5 and got.state.dtype == np.float64
    assert np.array_equal(got.images["main"], obs.images["main"]) and got.images["main"].flags.writeable
    assert np.array_equal(got.privileged[0]["source"], obs.privileged[0]["source"])
    result = EpisodeResult(episode, "put_carrot_on_plate", "success", steps=60, metrics={"stand_in_table": True})
    assert unpack(pack(Ended(result))) == Ended(result)


def test_only_project_dataclasses_are_built_from_a_message():
    forged = msgpack.packb({"__dataclass__": "subprocess:Popen", "fields": {"args": ["true"]}})
    with pytest.raises(ValueError, match="not a qdepth_bench class"):
        unpack(forged)
    with pytest.raises(TypeError, match="cannot send"):
        pack(Died(object()))  # type: ignore[arg-type]


def _episode_through(pool, episode, action) -> tuple:
    """One episode on slot 0 of `pool`, the same action every step; its observations and result."""
    pool.send(0, StartEpisode(episode))
    seen = []
    while True:
        ((_, reply),) = pool.poll(300)
        if isinstance(reply, Observation):
            seen.append(reply.observation.images["main"].copy())
            pool.send(0, Chunk(action[None]))
        else:
            return seen, reply


@pytest.mark.slow
def test_a_worker_in_another_interpreter_runs_the_episode_a_spawned_one_does_and_its_death_is_reported():
    """The foreign-worker path (here with this same Python) against the spawned one, on a real LIBERO
    episode: the same frames and result; a killed foreign worker is a "died" reply, as a spawned one is."""
    import sys

    from qdepth_bench.core.sim import WorkerEnvironment
    from qdepth_bench.eval.pool import LocalPool
    from qdepth_bench.registry.sims import make_backend

    spec = suite_registry().suites["libero_object"].with_overrides({"max_steps": 3})
    episode = make_backend(spec).episodes([0], 1, 0)[0]
    requirements = PolicyRequirements(cameras=("main",))
    action = np.zeros(7, dtype=np.float32)
    outcomes = []
    for environment in (None, WorkerEnvironment(sys.executable, {}, "this Python")):
        pool = LocalPool(1, WorkerSettings(spec, requirements, "r"), environment)
        try:
            outcomes.append(_episode_through(pool, episode, action))
            if environment is not None:
                pool._procs[0].kill()
                ((_, reply),) = pool.poll(60)
                assert reply.kind == "died"
        finally:
            pool.close()
    (frames_a, end_a), (frames_b, end_b) = outcomes
    assert len(frames_a) == len(frames_b) == 3 and all(
        np.array_equal(a, b) for a, b in zip(frames_a, frames_b, strict=True)
    )
    assert end_a.kind == end_b.kind == "end" and (end_a.result.status, end_a.result.steps) == (
        end_b.result.status,
        end_b.result.steps,
    )
