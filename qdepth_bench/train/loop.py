"""Pieces every training run shares: the learning-rate schedule and the CSV/JSON log (the distributed
setup is `train.distributed`)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


def warmup_cosine(step: int, warmup: int, cycle: int) -> float:
    """Multiplier of the base lr: linear warm-up over `warmup` steps, then cosine decay over `cycle` steps
    (the paper: 200 and 10^7, i.e. effectively constant after warm-up)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(cycle, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class MetricsLog:
    """Appends one row per logged step to `<out>/log.csv` and keeps the last row in `<out>/metrics.json`."""

    def __init__(self, out: Path, fields: list[str]) -> None:
        self.path, self.fields = out / "log.csv", fields
        self.summary = out / "metrics.json"
        out.mkdir(parents=True, exist_ok=True)

    def drop_from(self, step: int) -> None:
        """Forget rows of `step` and later (a resumed run logs them again)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) < step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.summary.write_text(json.dumps(row, indent=2))
