"""Ctrl-C that stops a run at a safe point.

The first SIGINT only sets a flag that the rollout engine checks on every turn of its loop (env workers
ignore SIGINT, and simulator code can swallow KeyboardInterrupt: LIBERO's reset retries inside
`finally: continue`); the engine then closes its workers, unfinished episodes are dropped and every
finished one stays committed. A second SIGINT interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class GracefulInterrupt:
    """Context manager: while active, the first Ctrl-C sets `requested` instead of raising."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None  # what signal.signal returned: a handler, SIG_DFL/SIG_IGN or None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
