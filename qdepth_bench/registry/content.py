"""Where the declarative content folders live.

`policies/` (with the shipped `checkpoints/`), `suites/`, `training/`, `reference/` and `ablations/` are
data that users edit: one YAML or CSV file per policy, suite family, recipe, paper table or ablation. They
ship inside the package (`qdepth_bench/content/`), so a checkout, an editable install and an installed
wheel find them the same way. `QDEPTH_BENCH_CONTENT` points at other roots with the same layout, for users
who keep their own policies and suites elsewhere; their files are read after the built-in ones and win on
name clashes.
"""

from __future__ import annotations

import os
from pathlib import Path

from qdepth_bench.core.errors import UserError

CONTENT_ENV = "QDEPTH_BENCH_CONTENT"
FOLDERS = ("policies", "suites", "training", "reference", "ablations", "formats")


def builtin_root() -> Path:
    """The content shipped with the package."""
    root = Path(__file__).resolve().parents[1] / "content"
    if not (root / "suites").is_dir():
        raise UserError(f"{root} lacks its suites/ folder: reinstall qdepth-bench (bash scripts/setup.sh).")
    return root


def content_roots() -> list[Path]:
    """The built-in root, then the user roots of QDEPTH_BENCH_CONTENT (later wins)."""
    return [builtin_root(), *(Path(p) for p in os.environ.get(CONTENT_ENV, "").split(os.pathsep) if p)]


def content_path(relative: str) -> Path:
    """A path given relative to a content root (`policies/checkpoints/X`): the last root that has it, else
    the built-in one (whose missing path the caller reports)."""
    found = [root / relative for root in content_roots() if (root / relative).exists()]
    return found[-1] if found else builtin_root() / relative


def content_dirs(folder: str) -> list[Path]:
    """Every existing directory for one content folder, built-in first, user roots after (later wins)."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown content folder {folder!r}")
    return [root / folder for root in content_roots() if (root / folder).is_dir()]
