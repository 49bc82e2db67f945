"""Re-run recorded episodes of a run exactly as they were run: same suite protocol, same policy identity, same
seed, same episodes. `qdepth-bench verify` uses this to measure how reproducible a run is on this machine.

Everything that would make the re-run a different experiment is refused up front with one line: a suite whose
protocol hash changed, a policy or checkpoint whose identity differs, other package versions (unless allowed).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.policy import Policy
from qdepth_bench.core.protocol import SuiteSpec
from qdepth_bench.core.provenance import package_versions
from qdepth_bench.registry.policies import make_policy
from qdepth_bench.registry.suites import suite_registry

#: protocol-record keys that are not protocol constants
_RECORD_ONLY = ("suite", "backend", "protocol_version")


def suite_of(run: dict[str, Any]) -> SuiteSpec:
    """The suite spec a run was recorded under, rebuilt from its recorded protocol and checked by hash."""
    suites = suite_registry().suites
    if run["suite"] not in suites:
        raise UserError(f"run {run['run_id']} is on suite '{run['suite']}', which is not registered here.")
    spec = suites[run["suite"]]
    if run["backend"] != spec.backend:
        spec = spec.with_backend(run["backend"])
    recorded = json.loads(run["protocol"])
    constants = {k: v for k, v in recorded.items() if k not in _RECORD_ONLY}
    missing = sorted(set(constants) - set(spec.protocol))
    if missing:
        raise UserError(f"run {run['run_id']} records protocol setting '{missing[0]}', which {spec.name} lacks here.")
    spec = spec.with_overrides({k: v for k, v in constants.items() if spec.protocol[k] != v})
    if spec.protocol_hash() != run["protocol_hash"]:
        raise UserError(
            f"{spec.name}'s protocol here (hash {spec.protocol_hash()}) is not the one run {run['run_id']} "
            f"was recorded under ({run['protocol_hash']}); check out the qdepth-bench version that recorded it."
        )
    return spec


def policy_of(run: dict[str, Any]) -> Policy:
    """The policy a run was recorded with, rebuilt from its recorded name and config and checked by identity."""
    config = json.loads(run["policy_config"])
    policy = make_policy(run["policy_name"], config)
    identity = policy.identity()
    if identity.config_hash != run["policy_config_hash"]:
        policy.close()
        raise UserError(
            f"policy '{run['policy_name']}' here has config hash {identity.config_hash}, the run recorded "
            f"{run['policy_config_hash']}: its options changed meaning; re-run with the version that recorded it."
        )
    if (identity.checkpoint_hash or "") != (run["policy_checkpoint_hash"] or ""):
        policy.close()
        raise UserError(
            f"the checkpoint of '{run['policy_name']}' here (weights {identity.checkpoint_hash or 'none'}) is not "
            f"the one run {run['run_id']} used ({run['policy_checkpoint_hash']}); put that checkpoint back at "
            f"{config.get('checkpoint') or 'its recorded path'}."
        )
    return policy


def version_differences(run: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(package, recorded version, version here) for every tracked package that differs."""
    recorded = json.loads(run["package_versions"] or "{}")
    here = package_versions()
    return [
        (name, recorded.get(name), here.get(name))
        for name in sorted(set(recorded) | set(here))
        if recorded.get(name) != here.get(name)
    ]


def sample_episodes(recorded: pd.DataFrame, k: int | None, seed: int = 0) -> list[tuple[int, int, int]]:
    """(task, episode index, repeat) of k scored episodes, stratified over tasks and outcomes (k=None: all).

    Each (task, outcome) stratum gets its share of k by largest remainder, at least one while k allows, so
    a sample keeps the run's mix of tasks and of successes and failures; the draw inside a stratum is seeded.
    """
    scored = recorded[recorded["status"].isin(["success", "failure"])]
    strata: dict[tuple[int, str], list[tuple[int, int, int]]] = {}
    for row in scored.itertuples():
        place = (int(row.task_id), int(row.episode_index), int(row.repeat))
        strata.setdefault((place[0], str(row.status)), []).append(place)
    total = sum(len(members) for members in strata.values())
    if k is None or k >= total:
        return sorted(p for members in strata.values() for p in members)
    names = sorted(strata)
    shares = {s: k * len(strata[s]) / total for s in names}
    take = {s: int(shares[s]) for s in names}
    if k >= len(names):
        for s in names:
            take[s] = max(take[s], 1)
    while sum(take.values()) < k:
        s = max((s for s in names if take[s] < len(strata[s])), key=lambda s: (shares[s] - take[s], s))
        take[s] += 1
    while sum(take.values()) > k:
        s = max((s for s in names if take[s] > 1), key=lambda s: (take[s] - shares[s], s))
        take[s] -= 1
    rng = np.random.default_rng(seed)
    chosen: list[tuple[int, int, int]] = []
    for s in names:
        members = sorted(strata[s])
        chosen += [members[i] for i in rng.choice(len(members), size=take[s], replace=False)]
    return sorted(chosen)
