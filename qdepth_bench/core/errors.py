"""The one exception type that reaches the user.

Every failure caused by input (a name, a path, a config, missing assets) is raised as `UserError` with a
message that names the fix; the CLI prints it as a single line and exits non-zero. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a missing prerequisite; the message says what to do about it."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
