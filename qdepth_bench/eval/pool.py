"""Worker pools: how the engine reaches its env workers. Local spawned processes by default, Ray actors
across machines (`ray_pool.py`); both present `send` / `poll` / `restart` / `close` over numbered slots, and
`make_pool` is the one way to get either.

A worker that dies shows up in `poll` as a `Died` reply for its slot; the engine records the episode it was
running as an error and restarts the slot.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import subprocess
import threading
from abc import ABC, abstractmethod
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.sim import WorkerEnvironment
from qdepth_bench.eval.messages import (
    Close,
    Died,
    FromWorker,
    MessageConnection,
    Prepare,
    Setup,
    ToWorker,
    WorkerLaunch,
    WorkerSettings,
)
from qdepth_bench.registry.sims import worker_environment


def renderer_threads(workers: int, cores: int | None = None) -> dict[str, str]:
    """Environment for workers' software rendering: split the cores between workers.

    Mesa's llvmpipe renders with one thread per core in every process; N workers on N cores would then
    fight over the cores. With fewer cores than workers each renders inline (0 extra threads), the cheapest
    per frame. A value the user set is kept. Frames are identical whatever the thread count.
    """
    if "LP_NUM_THREADS" in os.environ:
        return {}
    cores = cores or os.cpu_count() or 1
    share = cores // max(workers, 1)
    return {"LP_NUM_THREADS": str(share if share >= 2 else 0)}


def make_pool(
    size: int,
    settings: WorkerSettings,
    executor: str = "local",
    ray_address: str | None = None,
    early: bool = False,
) -> WorkerPool:
    """`size` env workers for `settings` on the chosen executor: local processes (in the simulator's own
    Python where it has one, `WorkerEnvironment`) or Ray actors. `early`: started before the run exists
    (`engine.Engine.start_early`): local workers hold their output back until `configure`."""
    environment = worker_environment(settings.spec)
    if executor == "local":
        return LocalPool(size, settings, environment, early)
    if environment is not None:
        raise UserError(
            f"--executor ray cannot start {settings.spec.backend} env workers in {environment.label}; "
            "run it with the local executor (the default)."
        )
    try:
        from qdepth_bench.eval.ray_pool import RayPool
    except ImportError:
        raise UserError(
            "--executor ray needs Ray: install the extra with QDEPTH_EXTRAS=libero,model,ray,dev "
            "bash scripts/setup.sh (or pip install 'ray>=2.40')."
        ) from None
    return RayPool(size, settings, ray_address)


class WorkerPool(ABC):
    """Numbered env workers that take messages and answer asynchronously, all with the same settings."""

    def __init__(self, size: int, settings: WorkerSettings) -> None:
        self.size = size
        #: what every worker, and every worker started later in a slot, runs with
        self.settings = settings
        #: the task whose env each worker was asked to build ahead of its first episode (`prepare`), if any
        self.prepared: list[int | None] = [None] * size

    def prepare(self, slot: int, task_id: int) -> None:
        """Have the worker of `slot` build the env of `task_id` now (while the policy loads)."""
        self.prepared[slot] = task_id
        self.send(slot, Prepare(task_id))

    def configure(self, settings: WorkerSettings) -> None:
        """Give every worker, and every worker started later in a slot, the run's own settings."""
        self.settings = settings
        for slot in range(self.size):
            self.send(slot, Setup(settings))

    @abstractmethod
    def send(self, slot: int, message: ToWorker) -> None:
        """Queue a message for the worker of `slot`."""

    @abstractmethod
    def poll(self, timeout: float) -> list[tuple[int, FromWorker]]:
        """Replies that arrived within `timeout` seconds, as (slot, reply); `Died` for a dead worker."""

    @abstractmethod
    def restart(self, slot: int) -> None:
        """Kill the worker of `slot` (hung or dead) and start a fresh one in its place."""

    @abstractmethod
    def close(self, wait: bool = True) -> None:
        """Stop every worker: let each finish what it is doing and exit (wait), or end it at once (a pool
        started early whose run never came, so nothing it does is wanted)."""


class ForeignProcess:
    """An env worker started in another Python environment, with the few `multiprocessing.Process` members
    the pool uses; its sentinel is a pidfd, ready when the process ends."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.sentinel = os.pidfd_open(popen.pid)

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def __del__(self) -> None:
        os.close(self.sentinel)


class LocalPool(WorkerPool):
    """Env workers as spawned processes on this machine (spawn, never fork: GL contexts do not survive fork).

    With a `WorkerEnvironment` the workers run in that Python instead (`eval.foreign_worker`), talking over a
    socket pair in `eval.messages`' format."""

    def __init__(
        self, size: int, settings: WorkerSettings, environment: WorkerEnvironment | None = None, early: bool = False
    ) -> None:
        """`early`: started before the run exists (`engine.Engine.start_early`); each worker holds its output
        back until `configure` gives it the run's settings (`worker.HeldOutput`)."""
        super().__init__(size, settings)
        self._threads = renderer_threads(size)
        self._early = early
        self._environment = environment
        self._ctx = mp.get_context("spawn")
        self._procs: list = [None] * size
        self._conns: list = [None] * size
        for slot in range(size):
            self._start(slot)

    def _launch(self) -> WorkerLaunch:
        """The first message of a worker started now: a worker started once the run is known holds nothing."""
        return WorkerLaunch(self.settings, hold_output=self._early)

    def _start(self, slot: int) -> None:
        # started with SIGINT ignored (kept across exec, and Python then installs no handler): a Ctrl-C while
        # the worker is still importing is the engine's to handle, not a traceback per worker
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        proc: BaseProcess | ForeignProcess
        ours: Connection | MessageConnection
        try:
            if self._environment is None:
                proc, ours = self._spawn(slot)
            else:
                proc, ours = self._start_foreign(self._environment)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self._procs[slot], self._conns[slot] = proc, ours

    def _spawn(self, slot: int) -> tuple[BaseProcess, Connection]:
        from qdepth_bench.eval.worker import worker_main

        ours, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=worker_main,
            args=(theirs, self._launch(), self._threads),
            daemon=True,
            name=f"qdepth-bench-env-{slot}",
        )
        proc.start()
        theirs.close()
        return proc, ours

    def _start_foreign(self, environment: WorkerEnvironment) -> tuple[ForeignProcess, MessageConnection]:
        ours, theirs = socket.socketpair()
        variables = {**os.environ, **self._threads, **environment.variables}
        command = [environment.python, "-m", "qdepth_bench.eval.foreign_worker", str(theirs.fileno())]
        try:
            popen = subprocess.Popen(command, pass_fds=[theirs.fileno()], env=variables, stdin=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            raise UserError(
                f"cannot start env workers in {environment.label or environment.python} ({exc}); "
                "re-run scripts/setup.sh to rebuild it."
            ) from None
        finally:
            theirs.close()
        conn = MessageConnection(Connection(ours.detach()))
        try:
            conn.send(self._launch())
        except OSError:
            pass  # the worker died at once; its sentinel reports it in the next poll
        return ForeignProcess(popen), conn

    def configure(self, settings: WorkerSettings) -> None:
        self._early = False  # a worker started from now on is started for this run
        super().configure(settings)

    def send(self, slot: int, message: ToWorker) -> None:
        try:
            self._conns[slot].send(message)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the worker died; its sentinel reports it in the next poll

    def poll(self, timeout: float) -> list[tuple[int, FromWorker]]:
        by_handle = {}
        for slot, (proc, conn) in enumerate(zip(self._procs, self._conns, strict=True)):
            by_handle[conn] = slot
            by_handle[proc.sentinel] = slot
        replies: list[tuple[int, FromWorker]] = []
        dead: set[int] = set()
        for handle in wait(list(by_handle), timeout):
            slot = by_handle[handle]
            if handle is self._conns[slot]:
                if not self._drain(slot, replies):
                    dead.add(slot)
            else:
                dead.add(slot)
        for slot in sorted(dead):
            self._drain(slot, replies)
            proc = self._procs[slot]
            proc.join(timeout=5)
            replies.append((slot, Died(f"env worker pid {proc.pid} exited with code {proc.exitcode}")))
        return replies

    def _drain(self, slot: int, replies: list[tuple[int, FromWorker]]) -> bool:
        """Collect every reply waiting on the slot's pipe; False when the pipe is closed (worker gone)."""
        conn = self._conns[slot]
        try:
            while conn.poll():
                replies.append((slot, conn.recv()))
        except (EOFError, OSError):
            return False
        return True

    def restart(self, slot: int) -> None:
        self._kill(slot)
        self.prepared[slot] = None
        self._start(slot)

    def _kill(self, slot: int) -> None:
        proc, conn = self._procs[slot], self._conns[slot]
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        conn.close()

    def close(self, wait: bool = True) -> None:
        for slot in range(self.size):
            self.send(slot, Close())
        for slot, proc in enumerate(self._procs):
            if wait:
                proc.join(timeout=10)
            self._kill(slot)
