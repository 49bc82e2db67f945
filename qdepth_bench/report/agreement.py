"""How far a re-run of recorded episodes agrees with the recording: per episode (outcome and steps), the
agreement rate with its interval, and the success rates of both over the same episodes with an exact
McNemar test. `qdepth-bench verify` prints it; nothing here runs anything."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from qdepth_bench.report.stats import mcnemar_exact, wilson_interval


@dataclass(frozen=True)
class EpisodePair:
    task_id: int
    episode_index: int
    repeat: int
    recorded: str
    recorded_steps: int
    remeasured: str
    remeasured_steps: int

    @property
    def agrees(self) -> bool:
        return self.recorded == self.remeasured and self.recorded_steps == self.remeasured_steps


@dataclass(frozen=True)
class Agreement:
    """The paired comparison of recorded and re-measured episodes (errors in the re-run are left out)."""

    pairs: list[EpisodePair]
    #: episodes whose re-run ended in an error (no outcome to compare)
    errors: list[tuple[int, int, int]]

    @property
    def n(self) -> int:
        return len(self.pairs)

    @property
    def agreeing(self) -> int:
        return sum(p.agrees for p in self.pairs)

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.agreeing, self.n)

    @property
    def recorded_successes(self) -> int:
        return sum(p.recorded == "success" for p in self.pairs)

    @property
    def remeasured_successes(self) -> int:
        return sum(p.remeasured == "success" for p in self.pairs)

    @property
    def only_recorded(self) -> int:
        """Episodes that succeeded when recorded and failed when re-measured."""
        return sum(p.recorded == "success" and p.remeasured == "failure" for p in self.pairs)

    @property
    def only_remeasured(self) -> int:
        return sum(p.recorded == "failure" and p.remeasured == "success" for p in self.pairs)

    @property
    def mcnemar_p(self) -> float:
        return mcnemar_exact(self.only_recorded, self.only_remeasured)


def compare(recorded: pd.DataFrame, remeasured: pd.DataFrame) -> Agreement:
    """Pair episodes by (task, episode index, repeat); every re-measured episode must have a recorded twin."""
    before = {(int(r.task_id), int(r.episode_index), int(r.repeat)): r for r in recorded.itertuples()}
    pairs, errors = [], []
    for r in remeasured.sort_values(["task_id", "episode_index", "repeat"]).itertuples():
        key = (int(r.task_id), int(r.episode_index), int(r.repeat))
        if r.status == "error":
            errors.append(key)
            continue
        old = before[key]
        pairs.append(EpisodePair(*key, str(old.status), int(old.steps), str(r.status), int(r.steps)))
    return Agreement(pairs, errors)
