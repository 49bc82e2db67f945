"""One doctor check: what was found and, when something is missing, the one command that fixes it."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution, None when it is absent."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
