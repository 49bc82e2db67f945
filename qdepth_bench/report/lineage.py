"""Where a recorded run's weights came from: the lineage of its checkpoint (`core.lineage`), found from the
run's policy options, as long as the folder there still holds the weights the run used (same hash)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qdepth_bench.core.hashing import file_hash
from qdepth_bench.core.lineage import lineage_summary, read_lineage
from qdepth_bench.core.policy import CHECKPOINT_WEIGHTS
from qdepth_bench.registry.content import content_path


def run_lineage(record: dict[str, Any]) -> str | None:
    """The compact lineage of a run's checkpoint (`bridge(13 ep) -> fractal(9 ep)`); None when the run has no
    checkpoint, its folder is not here or holds other weights now, or it records no lineage."""
    expected = record.get("policy_checkpoint_hash")
    if not expected:
        return None
    options = json.loads(record.get("policy_config") or "{}")
    folders = []
    if options.get("checkpoint"):
        folders.append(Path(options["checkpoint"]))
    if options.get("default_checkpoint"):
        folders.append(content_path(options["default_checkpoint"]))
    for folder in folders:
        weights = folder / CHECKPOINT_WEIGHTS
        if weights.is_file() and file_hash(weights) == expected:
            lineage = read_lineage(folder)
            return lineage_summary(lineage) if lineage else None
    return None
