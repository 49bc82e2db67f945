"""The simulator side of the rollout engine: one worker owns one env and answers the engine's messages.

Messages in (tuples): ("episode", EpisodeSpec) starts an episode; ("chunk", actions) executes a chunk;
("abort",) drops the running episode; ("close",) ends the worker. Replies: ("obs", key, ObservationBatch,
seconds spent) when the episode needs its next chunk, ("end", EpisodeResult) when it is over, ("fatal", text) when the
suite cannot be set up at all (a setup error that no retry fixes). The same `EnvWorker` runs in a spawned
process (`worker_main`, local executor) or inside a Ray actor (ray executor).
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..policy import PolicyRequirements
from ..registry import make_backend
from ..suite import Env, EpisodeSpec, SuiteSpec
from .episode import EpisodeResult, EpisodeRunner
from .videos import video_path, write_video


def error_text(exc: BaseException) -> str:
    """The last line of an exception, as stored with an episode."""
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:2000]


class EnvWorker:
    """One simulator, reused across consecutive episodes of the same task and rebuilt when the task changes."""

    def __init__(self, spec: SuiteSpec, requirements: PolicyRequirements, run_id: str,
                 video_dir: str | None = None, demo_dir: str | None = None) -> None:
        self.spec = spec
        self.requirements = requirements
        self.run_id = run_id
        self.video_dir = Path(video_dir) if video_dir else None
        #: with a demo folder, every successful episode is written there as a one-demo LIBERO-format file
        self.demo_dir = Path(demo_dir) if demo_dir else None
        self.backend = make_backend(spec)
        self.env: Env | None = None
        self.runner: EpisodeRunner | None = None

    def handle(self, message: tuple) -> tuple | None:
        """Answer one message of the engine (None: no answer is due)."""
        kind = message[0]
        if kind == "abort":
            self.runner = None
            return None
        if kind == "close":
            self.close()
            return None
        if kind == "ping":
            return ("pong", os.getpid())
        episode: EpisodeSpec = message[1] if kind == "episode" else self.runner.result.episode
        start = time.perf_counter()
        try:
            if kind == "episode":
                obs = self._start(episode)
            else:
                obs = self.runner.run_chunk(message[1])
        except UserError as exc:
            self.close()
            return ("fatal", str(exc))
        except Exception as exc:  # noqa: BLE001 - this episode's error; the env is rebuilt for the next
            result = self.runner.result if self.runner else EpisodeResult(episode, "", "failure")
            result.status, result.error = "error", error_text(exc)
            self.close()
            return ("end", result)
        if obs is not None:
            return ("obs", episode.key, obs, time.perf_counter() - start)
        return ("end", self._finish())

    def _start(self, episode: EpisodeSpec) -> Any:
        if self.env is not None and self.env.task.task_id != episode.task_id:
            self.env.close()
            self.env = None
        if self.env is None:
            self.env = self.backend.make_env(episode.task_id, self.requirements)
        self.runner = EpisodeRunner(self.env, episode, int(self.spec.protocol["max_steps"]),
                                    record_frames=self.video_dir is not None, record_demo=self.demo_dir is not None)
        return self.runner.start()

    def _finish(self) -> EpisodeResult:
        runner, self.runner = self.runner, None
        result = runner.result
        if self.video_dir is not None and runner.frames:
            path = video_path(self.video_dir, self.run_id, self.spec.name, result.episode.task_id,
                              result.episode.episode_index, result.status)
            result.video_path = str(write_video(path, runner.frames, int(self.spec.protocol["control_hz"])))
        if self.demo_dir is not None and result.status == "success":
            self._write_demo(runner)
        return result

    def _write_demo(self, runner: EpisodeRunner) -> None:
        from ..data.libero_hdf5 import write_episodes

        episode = runner.result.episode
        demo = {k: np.stack([row[k] for row in runner.demo_rows]) for k in runner.demo_rows[0]}
        demo["actions"] = np.stack(runner.demo_actions)
        path = self.demo_dir / f"task{episode.task_id:02d}" / f"demo{episode.episode_index:04d}.hdf5"
        write_episodes(path, [demo], self.env.task.instruction, self.backend.bddl_file_of(episode.task_id),
                       {"suite": self.spec.name, "variant": episode.variant, "seed": episode.seed})

    def close(self) -> None:
        self.runner = None
        if self.env is not None:
            env, self.env = self.env, None
            env.close()


def worker_main(conn: Connection, spec: SuiteSpec, requirements: PolicyRequirements, run_id: str,
                video_dir: str | None, demo_dir: str | None, environment: dict[str, str]) -> None:
    """Entry point of a spawned env worker process.

    Ctrl-C is the engine's to handle (it stops the run at a safe point and closes the workers), so the
    worker ignores SIGINT, which a terminal sends to the whole process group.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(environment)
    worker = EnvWorker(spec, requirements, run_id, video_dir, demo_dir)
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the engine is gone
                return
            reply = worker.handle(message)
            if message[0] == "close":
                return
            if reply is not None:
                conn.send(reply)
    finally:
        worker.close()
