"""What a run records about where it ran: code commit, package versions, host."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

#: Distributions whose versions change numbers (simulators, model stack) or tables.
TRACKED_PACKAGES = (
    "qdepth-bench",
    "numpy",
    "torch",
    "transformers",
    "mujoco",
    "robosuite",
    "libero",
    "bddl",
    "mani-skill",
    "sapien",
    "pandas",
    "sqlite-utils",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str:
    """The commit of the qdepth-bench checkout, with '+dirty' for uncommitted changes; '' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+dirty" if dirty else "")


def host() -> str:
    return f"{platform.node()} ({platform.system()} {platform.machine()}, Python {platform.python_version()})"
