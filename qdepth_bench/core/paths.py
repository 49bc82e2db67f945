"""Folders outside the package that the project looks in: the `shared/` folder beside a checkout."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_ENV = "QDEPTH_BENCH_SHARED"


def shared_dir() -> Path | None:
    """`$QDEPTH_BENCH_SHARED`, else a `shared/` folder beside the checkout (assets that are not
    redistributed with the project, vendored sources); None when there is neither."""
    configured = os.environ.get(SHARED_ENV)
    if configured:
        return Path(configured)
    beside = Path(__file__).resolve().parents[2].parent / "shared"
    return beside if beside.is_dir() else None
