"""How well a simulator ranks policies the way the real robot does: MMRV and Pearson's r, as SimplerEnv defines
them, between simulated runs recorded here and SimplerEnv's published real-robot success rates.

Why these two: a simulated benchmark is useful when it orders policies as the real robot orders them (a
higher simulated rate means a higher real rate). Pearson's r measures the linear agreement of the rates;
the mean maximum rank violation (MMRV, Li et al. 2024, the SIMPLER paper) measures how much real-robot
success is at stake where simulation orders two policies the other way round: for each policy, the largest
real-rate gap to a policy the simulator ranks on the wrong side of it, averaged over policies (0 = the
simulator orders every pair as the real robot does).

Both follow SimplerEnv's `simpler_env/utils/metrics.py` to the last digit, quirks included, so figures are
comparable with SimplerEnv's: ties count as violations when the other side is not tied in the same way
(strict comparisons on both sides); Pearson adds 1e-8 to its denominator and is 1 when the centred rates are
identical (so two constant vectors give 1, a constant against a varying one gives 0). The reference numbers
live in `content/reference/simplerenv_real_sim.yaml` with their source.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.base import read_yaml
from qdepth_bench.registry.content import content_path

REFERENCE_FILE = "reference/simplerenv_real_sim.yaml"


def pearson(sim: Sequence[float], real: Sequence[float]) -> float:
    """Pearson's r between simulated and real rates, as SimplerEnv computes it (see the module docstring)."""
    x, y = np.asarray(sim, dtype=float), np.asarray(real, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"{x.shape} simulated rates against {y.shape} real ones")
    x, y = x - np.mean(x), y - np.mean(y)
    if np.all(x == y):
        return 1.0
    return float(np.sum(x * y) / (np.sqrt(np.sum(x**2) * np.sum(y**2)) + 1e-8))


def mmrv(sim: Sequence[float], real: Sequence[float]) -> float:
    """Mean maximum rank violation: per policy, the largest real-rate gap to a policy that simulation orders
    differently from the real robot (strict comparisons), averaged over the policies."""
    x, y = np.asarray(sim, dtype=float), np.asarray(real, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"{x.shape} simulated rates against {y.shape} real ones")
    worst = []
    for i in range(len(x)):
        flipped = (x[i] > x) != (y[i] > y)
        worst.append(float(np.max(np.abs(y[i] - y[flipped]), initial=0.0)))
    return float(np.mean(worst))


@dataclass(frozen=True)
class ReferenceTask:
    """One SimplerEnv task with its published real-robot and SIMPLER rates, and where its runs are recorded."""

    key: str
    suite: str
    task: str
    #: this project's task pools cells of several SimplerEnv tasks (drawer): the env ids of this one start so
    env_id_prefix: str | None
    real: dict[str, float]
    sim: dict[str, float]


@lru_cache(maxsize=1)
def reference_tasks() -> tuple[ReferenceTask, ...]:
    """The published rates, in the order SimplerEnv lists them."""
    data = read_yaml(content_path(REFERENCE_FILE))
    return tuple(
        ReferenceTask(
            key,
            entry["suite"],
            entry["task"],
            entry.get("env_id_prefix"),
            {str(p): float(v) for p, v in entry["real"].items()},
            {str(p): float(v) for p, v in entry["sim"].items()},
        )
        for key, entry in data["tasks"].items()
    )


def reference_policies() -> list[str]:
    """Every policy with published real-robot rates."""
    return list(dict.fromkeys(p for t in reference_tasks() for p in t.real))


@dataclass(frozen=True)
class TaskAgreement:
    """Agreement on one task over the policies measured on it (in SimplerEnv's order)."""

    task: ReferenceTask
    policies: list[str]
    #: simulated rate and scored episodes per policy (from recorded runs; SimplerEnv's for `published`)
    rates: list[float]
    episodes: list[int]
    mmrv: float
    pearson: float
    #: SimplerEnv's own simulated rates against the real ones, on the same policies
    published_mmrv: float
    published_pearson: float


def _agreement(task: ReferenceTask, policies: list[str], rates: list[float], episodes: list[int]) -> TaskAgreement:
    real = [task.real[p] for p in policies]
    published = [task.sim[p] for p in policies]
    return TaskAgreement(
        task,
        policies,
        rates,
        episodes,
        mmrv(rates, real),
        pearson(rates, real),
        mmrv(published, real),
        pearson(published, real),
    )


def published_agreement() -> list[TaskAgreement]:
    """SimplerEnv's own figures: its simulated rates against the real ones, every task and policy."""
    return [_agreement(t, list(t.sim), list(t.sim.values()), [0] * len(t.sim)) for t in reference_tasks()]


def _task_episodes(frame: pd.DataFrame, task: ReferenceTask) -> pd.DataFrame:
    mask = (
        (frame["suite"] == task.suite)
        & (frame["task_name"] == task.task)
        & frame["status"].isin(["success", "failure"])
    )
    picked = frame[mask]
    if task.env_id_prefix is not None:
        env_ids = picked["variant"].map(lambda v: str(json.loads(v or "{}").get("env_id", "")))
        picked = picked[env_ids.str.startswith(task.env_id_prefix)]
    return picked


def run_agreement(frame: pd.DataFrame, policy_of_run: dict[str, str]) -> list[TaskAgreement]:
    """MMRV and Pearson per reference task between recorded runs and the real robot.

    `frame`: the runs' episodes (`Store.episodes_frame`); `policy_of_run`: which published policy each run
    evaluates. Runs of one policy are pooled. A task needs scored episodes of at least two policies."""
    unknown = sorted(set(policy_of_run.values()) - set(reference_policies()))
    if unknown:
        raise UserError(
            f"no real-robot rates for policy '{unknown[0]}'; name one of {', '.join(reference_policies())}."
        )
    frame = frame.assign(reference_policy=frame["run_id"].map(policy_of_run))
    found = []
    for task in reference_tasks():
        episodes = _task_episodes(frame, task)
        counts = episodes.groupby("reference_policy")["success"].agg(["sum", "count"])
        policies = [p for p in task.real if p in counts.index]
        if len(policies) < 2:
            continue
        rates = [float(counts.loc[p, "sum"] / counts.loc[p, "count"]) for p in policies]
        found.append(_agreement(task, policies, rates, [int(counts.loc[p, "count"]) for p in policies]))
    return found
