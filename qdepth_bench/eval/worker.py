"""The simulator side of the rollout engine: one worker owns one env and answers the engine's messages.

The messages are `eval.messages`' typed ones: `StartEpisode` starts an episode, `Chunk` executes a chunk,
`Abort` drops the running episode, `Close` ends the worker. A worker started before the policy has loaded
(`engine.Engine.start_early`) also takes `Prepare`, which builds a task's env ahead of its first episode, and
`Setup`, the run's own `WorkerSettings`, which keeps that env only if it was built the way the policy needs it.
Replies: `Observation` when the episode needs its next chunk, `Ended` when it is over, `Fatal` when the suite
cannot be set up at all (a setup error that no retry fixes). The same `EnvWorker` runs in a spawned process
(`worker_main`, local executor), in another Python (`eval.foreign_worker`) or inside a Ray actor.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Protocol

from qdepth_bench.core.errors import UserError, is_transient
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.core.sim import Backend, Env, RecordedEpisode
from qdepth_bench.eval.episode import EpisodeResult, EpisodeRunner
from qdepth_bench.eval.messages import (
    Abort,
    Close,
    Ended,
    Fatal,
    FromWorker,
    Observation,
    Prepare,
    Setup,
    StartEpisode,
    ToWorker,
    WorkerLaunch,
    WorkerSettings,
)
from qdepth_bench.registry.sims import make_backend


def error_text(exc: BaseException) -> str:
    """The last line of an exception, as stored with an episode."""
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:2000]


class EnvWorker:
    """One simulator, reused across consecutive episodes of the same task and rebuilt when the task changes."""

    def __init__(self, settings: WorkerSettings) -> None:
        #: the run's suite, what its policy needs, its id and sinks (where finished episodes go besides the database)
        self.settings = settings
        self.env: Env | None = None
        self.runner: EpisodeRunner | None = None
        #: the env's renderer string, read once per env (None: not read yet)
        self.renderer: str | None = None
        #: seconds `prepare` spent building the env that is loaded, charged to the first episode that uses it
        self.prepared_s = 0.0
        self.backend = self._make_backend(settings.spec)

    def _make_backend(self, spec: SuiteSpec) -> Backend | None:
        """The suite's backend; None when it cannot be set up, which every later episode reports (`fatal`).

        The engine's process checks the same setup before planning a run, so a worker started early
        never prints a traceback for a problem the user is about to read in one line."""
        try:
            self.setup_error = ""
            return make_backend(spec)
        except Exception as exc:  # noqa: BLE001 - reported with the first episode
            self.setup_error = str(exc) if isinstance(exc, UserError) else error_text(exc)
            return None

    def handle(self, message: ToWorker) -> FromWorker | None:
        """Answer one message of the engine (None: no answer is due)."""
        if isinstance(message, Abort):
            self.runner = None
            return None
        if isinstance(message, Close):
            self.close()
            return None
        if isinstance(message, Setup):
            self.setup(message.settings)
            return None
        if isinstance(message, Prepare):
            self.prepare(message.task_id)
            return None
        backend = self.backend
        if backend is None:
            return Fatal(self.setup_error)
        if isinstance(message, StartEpisode):
            episode = message.episode
        elif self.runner is not None:
            episode = self.runner.result.episode
        else:
            return Fatal(f"the engine sent {message.kind!r} with no episode running")
        start, ahead = time.perf_counter(), 0.0
        try:
            if isinstance(message, StartEpisode):
                obs, ahead = self._start(backend, episode)
            else:
                obs = self._running().run_chunk(message.actions)
        except UserError as exc:
            self.close()
            return Fatal(str(exc))
        except Exception as exc:  # noqa: BLE001 - this episode's error; the env is rebuilt for the next
            result = self.runner.result if self.runner else EpisodeResult(episode, "", "failure")
            self.close()
            return Ended(result.fail(error_text(exc), is_transient(exc)))
        if obs is not None:
            # the worker's own time: the build `prepare` did ahead counts too, so the engine's wait beyond it
            # (`worker start`) is not charged a second time
            return Observation(episode.key, obs, time.perf_counter() - start + ahead)
        return Ended(self._finish())

    def setup(self, settings: WorkerSettings) -> None:
        """Take the run's settings; an env built for another suite protocol or another view is dropped."""
        if settings.spec != self.settings.spec:
            self.close()
            self.backend = self._make_backend(settings.spec)
        elif settings.requirements.env_view != self.settings.requirements.env_view:
            self.close()
        self.settings = settings

    def prepare(self, task_id: int) -> None:
        """Build the env of `task_id` now, before its first episode arrives. Best effort: a failure leaves no
        env, and the episode that builds it again reports the error."""
        backend = self.backend
        if backend is None or (self.env is not None and self.env.task.task_id == task_id):
            return
        self.close()
        try:
            self.env, self.prepared_s = self._build(backend, task_id)
        except Exception:  # noqa: BLE001 - see above: no env is left
            return

    def _build(self, backend: Backend, task_id: int) -> tuple[Env, float]:
        """The env of `task_id`, newly built, and the seconds that took."""
        started = time.perf_counter()
        env = backend.make_env(task_id, self.settings.requirements)
        return env, time.perf_counter() - started

    def _start(self, backend: Backend, episode: EpisodeSpec) -> tuple[Any, float]:
        """Reset the env to the episode (building it first if needed): the first observation, and the seconds
        of the env's build that `prepare` spent before the episode arrived."""
        if self.env is not None and self.env.task.task_id != episode.task_id:
            self.env.close()
            self.env = None
        # an env `prepare` built: its build time is this episode's, spent before the episode was sent
        ahead, self.prepared_s = (self.prepared_s if self.env is not None else 0.0), 0.0
        built = ahead
        if self.env is None:
            self.env, built = self._build(backend, episode.task_id)
        self.runner = EpisodeRunner(
            self.env,
            episode,
            int(self.settings.spec.protocol["max_steps"]),
            record_frames=any(s.wants_frames for s in self.settings.sinks),
            record_demo=any(s.wants_demo for s in self.settings.sinks),
        )
        self.runner.result.timing["env_build_s"] = built
        return self.runner.start(), ahead

    def _running(self) -> EpisodeRunner:
        if self.runner is None:
            raise RuntimeError("no episode is running")
        return self.runner

    def _finish(self) -> EpisodeResult:
        runner, self.runner = self._running(), None
        result = runner.result
        if self.renderer is None:
            try:
                self.renderer = runner.env.renderer()
            except Exception as exc:  # noqa: BLE001 - a fingerprint field, never a reason to lose the episode
                self.renderer = f"unknown ({error_text(exc)})"
        result.renderer = self.renderer
        record = RecordedEpisode(
            result.episode,
            runner.env.task,
            self.settings.run_id,
            result.status,
            int(self.settings.spec.protocol["control_hz"]),
            runner.frames,
            runner.demo_rows,
            runner.demo_actions,
        )
        for sink in self.settings.sinks:
            try:
                path = sink.write(record)
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the episode is retried, the worker lives on
                return result.fail(f"writing its {sink.name}: {error_text(exc)}", is_transient(exc))
            if path is not None and sink.name == "video":
                result.video_path = path
        return result

    def close(self) -> None:
        self.runner = None
        self.renderer = None
        self.prepared_s = 0.0
        if self.env is not None:
            env, self.env = self.env, None
            env.close()


class Channel(Protocol):
    """What a worker talks to the engine through: a pipe (pickle) or a `messages.MessageConnection`."""

    def send(self, obj: Any) -> None: ...

    def recv(self) -> Any: ...


class HeldOutput:
    """The standard output and error of a worker started before its run exists (`engine.Engine.start_early`),
    kept in files until the run's settings arrive and then written out. When the run never comes (the policy or
    the options were refused), what the simulator printed on import never reaches the user, whose one
    line of error stays one line."""

    def __init__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.held = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
        self.saved = {fd: os.dup(fd) for fd in self.held}
        for fd, file in self.held.items():
            os.dup2(file.fileno(), fd)

    def release(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, file in self.held.items():
            os.dup2(self.saved[fd], fd)
            os.close(self.saved[fd])
            file.seek(0)
            data = file.read()
            file.close()
            while data:
                data = data[os.write(fd, data) :]


def worker_main(conn: Connection, launch: WorkerLaunch, environment: dict[str, str]) -> None:
    """Entry point of a spawned env worker process.

    Ctrl-C is the engine's to handle (it stops the run at a safe point and closes the workers), so the
    worker ignores SIGINT, which a terminal sends to the whole process group.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(environment)
    serve(conn, launch)
    exit_now()


def exit_now() -> None:
    """End a worker process whose work is done without tearing down its interpreter (simulator and GL
    objects take about a second to finalise, and the engine waits for its workers to exit)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def serve(conn: Channel, launch: WorkerLaunch) -> None:
    """Answer the engine's messages until it closes the worker or goes away; output held until the run's
    settings arrive (`launch.hold_output`) is written out then."""
    held = HeldOutput() if launch.hold_output else None
    worker = EnvWorker(launch.settings)
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the engine is gone
                return
            reply = worker.handle(message)
            if isinstance(message, Setup) and held is not None:
                held.release()
                held = None
            if isinstance(message, Close):
                return
            if reply is not None:
                try:
                    conn.send(reply)
                except OSError:  # the engine is gone (crashed or killed): end quietly
                    return
    finally:
        worker.close()
