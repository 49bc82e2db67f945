"""Real-vs-sim agreement: SimplerEnv's own figures reproduced to the last digit from its published numbers, the
metrics on hand-checked cases, and `qdepth-bench realsim` on runs recorded in a real SQLite database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qdepth_bench.report.realsim import mmrv, pearson, published_agreement, reference_tasks
from qdepth_bench.results.store import Store

FIXTURE = Path(__file__).parent / "data" / "simplerenv_metrics" / "calc_metrics_output.txt"


def test_simplerenv_published_figures_are_reproduced_exactly():
    """tools/calc_metrics.py of SimplerEnv printed these from its REAL_PERF and SIMPLER_PERF (see the README)."""
    printed = dict(
        (m[1], (float(m[2]), float(m[3])))
        for m in re.finditer(r"(\w+):\nMMRV: ([\d.e-]+), Pearson: ([\d.e-]+)", FIXTURE.read_text())
    )
    assert len(printed) == 9
    ours = {row.task.key: (row.published_mmrv, row.published_pearson) for row in published_agreement()}
    assert ours == printed  # float equality: the same digits, not merely close


def test_metrics_on_hand_checked_cases():
    assert mmrv([0.1, 0.5, 0.9], [0.2, 0.4, 0.8]) == 0.0
    assert pearson([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == 1.0
    # reversed order: every policy's worst violation is the whole real gap
    assert mmrv([0.1, 0.2], [0.5, 0.3]) == pytest.approx(0.2)
    assert pearson([0.1, 0.2], [0.5, 0.3]) == pytest.approx(-1.0, abs=1e-6)
    # a tie in simulation against an order on the robot counts as a violation for the policy ranked higher
    assert mmrv([0.1, 0.1], [0.2, 0.3]) == pytest.approx(0.05)
    # SimplerEnv's 1e-8 in Pearson's denominator: perfectly correlated but not identical rates fall just below 1
    assert 1 - 1e-5 < pearson([0.0, 0.0, 0.042], [0.0, 0.0, 0.125]) < 1.0
    with pytest.raises(ValueError):
        mmrv([0.1], [0.1, 0.2])


def _record_run(store: Store, run_id: str, policy: str, suite: str, outcomes: dict[tuple[str, str], list[int]]) -> None:
    """A finished run with the given outcomes per (task, drawer env id or ''): 1 success, 0 failure, -1 a
    failure on a stand-in table (left out, as tables leave it out)."""
    store.start_run(
        {
            "run_id": run_id,
            "run_key": "{}",
            "suite": suite,
            "suite_family": "simpler",
            "backend": "simpler_env",
            "policy_name": policy,
            "policy_config_hash": run_id,
            "policy_checkpoint_hash": "",
            "setting": "single-view",
            "protocol": "{}",
            "protocol_hash": "p",
            "protocol_version": 1,
            "standard_protocol": 1,
            "seed": 0,
        }
    )
    index = 0
    for (task, env_id), successes in outcomes.items():
        for success in successes:
            store.record_episode(
                {
                    "run_id": run_id,
                    "suite": suite,
                    "task_id": 0,
                    "task_name": task,
                    "episode_index": index,
                    "variant": {"env_id": env_id} if env_id else {"cell": index},
                    "seed": index,
                    "status": "success" if success == 1 else "failure",
                    "success": int(success == 1),
                    "steps": 3,
                    "attempts": 1,
                    "metrics": json.dumps({"stand_in_table": success == -1}),
                }
            )
            index += 1


def test_realsim_on_recorded_runs(db_path, cli):
    store = Store(db_path)
    # carrot: rates 0.25, 0.5, 0.75 for rt-1-x, octo-base, octo-small; drawer split by the cells' env ids
    _record_run(store, "run_rt1x", "my-rt1x", "simpler_widowx", {("put_carrot_on_plate", ""): [1, 0, 0, 0, -1]})
    _record_run(store, "run_octob", "octo-base", "simpler_widowx", {("put_carrot_on_plate", ""): [1, 1, 0, 0]})
    _record_run(store, "run_octos", "my-octo-small", "simpler_widowx", {("put_carrot_on_plate", ""): [1, 1, 1, 0]})
    drawers = {
        ("drawer", "OpenTopDrawerCustomInScene-v0"): [1, 1],
        ("drawer", "CloseTopDrawerCustomInScene-v0"): [0, 0],
    }
    _record_run(store, "run_g1", "g1", "simpler_google", drawers)
    drawers = {
        ("drawer", "OpenTopDrawerCustomInScene-v0"): [0, 0],
        ("drawer", "CloseTopDrawerCustomInScene-v0"): [1, 0],
    }
    _record_run(store, "run_g2", "g2", "simpler_google", drawers)

    result = cli("realsim", "run_rt1x=rt-1-x", "run_octob", "run_octos=octo-small", "run_g1=rt-2-x", "run_g2=rt-1-x")
    assert result.exit_code == 0, result.output
    rows: dict[str, str] = {}  # the agreement table's row of each task (the rates table follows it)
    for line in result.output.splitlines():
        if line.count("│") > 4:
            rows.setdefault(line.split("│")[1].strip(), line)
    carrot = next(t for t in reference_tasks() if t.key == "widowx_carrot_on_plate")
    real = [carrot.real[p] for p in ("rt-1-x", "octo-base", "octo-small")]
    assert f"{mmrv([0.25, 0.5, 0.75], real):.4f}" in rows["widowx_carrot_on_plate"]
    assert f"{pearson([0.25, 0.5, 0.75], real):.4f}" in rows["widowx_carrot_on_plate"]
    opened = next(t for t in reference_tasks() if t.key == "google_robot_open_drawer")
    assert f"{mmrv([1.0, 0.0], [opened.real['rt-2-x'], opened.real['rt-1-x']]):.4f}" in rows["google_robot_open_drawer"]
    assert "google_robot_close_drawer" in rows and "widowx_spoon_on_towel" not in rows

    refused = cli("realsim", "run_g1")
    assert refused.exit_code == 2 and "run_g1=" in refused.output and "rt-1-x" in refused.output
    published = cli("realsim", db=False)
    assert published.exit_code == 0 and "0.9754" in published.output  # Pick Coke Can's Pearson
