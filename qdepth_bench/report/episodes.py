"""The episodes a report reads: one row per episode with its run and policy identity, the latest run of
each policy row on each suite (or the runs asked for), labelled for display. Tables and ablations share it.

A row key is the policy identity (name, config and checkpoint hashes) plus its setting; same-named
identities get their config hash in the label, and suites that run on several simulators name the
simulator (`SimulatorInfo.tag_rows`), so numbers from different simulators are never pooled.
"""

from __future__ import annotations

import json

import pandas as pd

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.perturbation import perturbation_of
from qdepth_bench.registry.sims import simulators
from qdepth_bench.results.store import Store


def _select_runs(episodes: pd.DataFrame, explicit: bool) -> pd.DataFrame:
    """Keep, per (policy row, suite), the episodes of the latest finished run (or, if none has finished,
    the most recently started one)."""
    if explicit or episodes.empty:
        return episodes
    order = episodes.assign(finished=episodes["run_status"] == "finished").sort_values(["finished", "run_started_at"])
    latest = order.groupby(["row_key", "suite"], sort=False)["run_id"].last()
    return episodes[episodes["run_id"].isin(set(latest.values))]


def _label_rows(episodes: pd.DataFrame) -> pd.DataFrame:
    """Add row keys (policy identity + setting) and labels, disambiguating same-named identities."""
    episodes = episodes.copy()
    identity = episodes["policy_name"] + "@" + episodes["policy_config_hash"] + episodes["policy_checkpoint_hash"]
    episodes["row_key"] = identity + "/" + episodes["setting"]
    names = episodes.groupby("policy_name")["row_key"].nunique()
    ambiguous = set(names[names > 1].index)
    tagged = {name for name, info in simulators().items() if info.tag_rows}
    episodes["label"] = [
        (f"{name} [{cfg[:6]}]" if name in ambiguous else name) + (f" ({backend})" if backend in tagged else "")
        for name, cfg, backend in zip(
            episodes["policy_name"], episodes["policy_config_hash"], episodes["backend"], strict=True
        )
    ]
    return episodes


def _stand_ins(episodes: pd.DataFrame) -> pd.Series:
    """Which episodes ran with stand-in assets (e.g. ManiSkill3's table stage replaced by a box)."""
    return episodes["metrics"].fillna("").str.contains('"stand_in_table": true', regex=False)


def perturbed_runs(store: Store) -> set[str]:
    """The runs whose protocol carries a perturbation (`core.perturbation`): they share their suite's name
    with its unperturbed runs, so a table that took the latest run per suite would otherwise show them."""
    return {r["run_id"] for r in store.runs() if perturbation_of(json.loads(r["protocol"]))}


def load_episodes(
    store: Store, policies: list[str] | None, run_ids: list[str] | None, stand_ins: bool = False
) -> pd.DataFrame:
    ids = [store.run(r)["run_id"] for r in run_ids] if run_ids else None
    frame = store.episodes_frame(ids)
    if ids is None and not frame.empty:  # perturbed runs belong to the robustness report, not to suite tables
        frame = frame[~frame["run_id"].isin(perturbed_runs(store))]
    if not frame.empty:
        stand_in = _stand_ins(frame)
        if stand_ins:  # shown on request, and marked as not the published protocol
            frame = frame.assign(standard_protocol=frame["standard_protocol"].where(~stand_in, 0))
        else:
            frame = frame[~stand_in]
    if policies:
        known = set(frame["policy_name"])
        unknown = [p for p in policies if p not in known]
        if unknown:
            raise UserError(
                f"no results for policy '{unknown[0]}' in {store.path}"
                + (f"; policies with results: {', '.join(sorted(known))}." if known else ".")
            )
        frame = frame[frame["policy_name"].isin(policies)]
    return _select_runs(_label_rows(frame), explicit=bool(run_ids))
