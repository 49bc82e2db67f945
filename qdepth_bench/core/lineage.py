"""A trained policy's lineage: every training stage that made its weights, oldest first, as its checkpoint
records it (`config.json` / `trainer.json` key `lineage`; written by `train.stages`).

Each stage is a dict: `recipe` (name), `recipe_hash` (of the merged recipe), `settings` (its train settings
and model), `data` (the data fingerprint), `steps`, `epochs` (None when the recipe counts steps), and
`init_from` (None, or the `path` and weights `hash` of the policy the stage started from). Reading it needs
no training code, so the reports (`runs show`, the ablation table) show it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LINEAGE_KEY = "lineage"


def stage_label(stage: dict[str, Any]) -> str:
    """One stage, compactly: `qdepth-paper-bridge(13 ep)`, or `(3000 steps)` for a recipe counted in steps."""
    length = f"{stage['epochs']:g} ep" if stage.get("epochs") else f"{stage.get('steps')} steps"
    return f"{stage.get('recipe', '?')}({length})"


def lineage_summary(lineage: list[dict[str, Any]]) -> str:
    """Every stage in order: `qdepth-paper-bridge(13 ep) -> qdepth-paper-fractal(9 ep)`; a first stage that
    started from weights made elsewhere (a folder with no lineage) starts with that folder."""
    labels = [stage_label(stage) for stage in lineage]
    start = lineage[0].get("init_from") if lineage else None
    if start:
        labels.insert(0, f"[{Path(start['path']).name}]")
    return " -> ".join(labels)


def read_lineage(folder: Path) -> list[dict[str, Any]] | None:
    """The lineage a policy folder's `config.json` records (None: none recorded, or no such folder)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    try:
        recorded = json.loads(config.read_text()).get(LINEAGE_KEY)
    except (ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, list) and recorded else None
