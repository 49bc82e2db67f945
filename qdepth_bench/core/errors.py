"""The exception type that reaches the user, and how episode errors are classified.

Every failure caused by input (a name, a path, a config, missing assets) is raised as `UserError` with a
message that names the fix; the CLI prints it as a single line and exits non-zero. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno

#: the exit status of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT), whichever signal it was
INTERRUPTED_EXIT = 130


class UserError(Exception):
    """Bad input or a missing prerequisite; the message says what to do about it."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class TransientError(RuntimeError):
    """A failure that may pass by itself (a policy server down, a full disk, a killed worker): the episode it
    hit is recorded as an error that the next run of the same command tries again, whatever its attempts."""


#: OS errors that say the machine, not the episode, is the problem: out of disk, quota or memory
_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.ENOMEM}


def is_transient(exc: BaseException) -> bool:
    """Whether an episode's error may pass by itself (see `TransientError`); anything else is permanent."""
    if isinstance(exc, (TransientError, MemoryError, ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS
