"""Where the declarative content folders live.

`policies/`, `suites/`, `training/` and `results/reference/` are data that users edit (one YAML or CSV
file per policy, suite family, recipe or paper table). They sit beside the package in the checkout, which
is installed in editable mode (`pip install -e .`) so that edits take effect without reinstalling.
`QDEPTH_BENCH_CONTENT` points at other roots with the same layout, for users who keep their own policies
and suites outside the repo; their files are read after the built-in ones and win on name clashes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

_PACKAGE_DIR = Path(__file__).resolve().parent
_FOLDERS = ("policies", "suites", "training", "results/reference", "results/ablations")


def builtin_root() -> Path:
    """The checkout holding the built-in content folders."""
    checkout = _PACKAGE_DIR.parent
    if not (checkout / "suites").is_dir():
        raise UserError(f"no suites/ folder beside {_PACKAGE_DIR}: install qdepth-bench from its checkout "
                        "with `pip install -e .` (bash scripts/setup.sh does).")
    return checkout


def content_dirs(folder: str) -> list[Path]:
    """Every existing directory for one content folder, built-in first, user roots after (later wins)."""
    if folder not in _FOLDERS:
        raise ValueError(f"unknown content folder {folder!r}")
    roots = [builtin_root()]
    roots += [Path(p) for p in os.environ.get("QDEPTH_BENCH_CONTENT", "").split(os.pathsep) if p]
    return [root / folder for root in roots if (root / folder).is_dir()]
