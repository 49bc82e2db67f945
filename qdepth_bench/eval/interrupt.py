"""Ctrl-C or SIGTERM that stops a run at a safe point.

The first and second SIGINT or SIGTERM only set a flag that the rollout engine checks on every turn of its
loop (env workers ignore SIGINT, and simulator code can swallow KeyboardInterrupt: LIBERO's reset retries
inside `finally: continue`); the engine then closes its workers, unfinished episodes are dropped, every
finished one stays committed and the run's status is written. A second Ctrl-C a moment after the first
therefore ends the same way instead of cutting the bookkeeping short; a third one interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

#: the signals that ask a run to stop
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: signals after which the next one raises at once
PATIENCE = 2


class GracefulInterrupt:
    """Context manager: while active, SIGINT and SIGTERM set `requested` instead of raising (twice)."""

    def __init__(self) -> None:
        self.requested = False
        self.received = 0
        self._previous: dict[int, Any] = {}  # what signal.signal returned: a handler, SIG_DFL/SIG_IGN or None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.received += 1
        if self.received >= PATIENCE:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
