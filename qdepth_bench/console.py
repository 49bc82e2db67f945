"""The `qdepth-bench` console script. It sets up signals before the command modules load (importing them,
torch among them, takes seconds), so a SIGTERM or Ctrl-C at any moment of start-up ends the same way as one
during a run: exit 130 and one line, never a traceback or a silent exit 143."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from qdepth_bench.core.errors import INTERRUPTED_EXIT


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point: SIGTERM stops every command as Ctrl-C does (a run in flight catches both itself and
    stops at a safe point)."""
    signal.signal(signal.SIGTERM, _stop)
    try:
        from qdepth_bench.cli import app

        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before the command started; nothing was recorded.\n")
        sys.exit(INTERRUPTED_EXIT)
