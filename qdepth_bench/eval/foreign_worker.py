"""Entry point of an env worker in another Python environment: `python -m qdepth_bench.eval.foreign_worker FD`.

The engine (`pool.LocalPool` with a `WorkerEnvironment`) starts it with one end of a socket pair as file
descriptor FD. The first message is its `messages.WorkerLaunch` (the run's `WorkerSettings`, and whether to
hold its output back until the run's own settings arrive, `worker.HeldOutput`); after that the worker answers
the engine as a spawned worker does, every message in `eval.messages`' format.
"""

from __future__ import annotations

import signal
import sys
from multiprocessing.connection import Connection

from qdepth_bench.eval.messages import MessageConnection
from qdepth_bench.eval.worker import exit_now, serve


def main(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle, as for spawned workers
    conn = MessageConnection(Connection(fd))
    try:
        launch = conn.recv()
    except EOFError:  # the engine went away before the worker started
        return
    serve(conn, launch)
    exit_now()


if __name__ == "__main__":
    main(int(sys.argv[1]))
