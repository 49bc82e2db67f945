"""`qdepth-bench compare --sequential` through the console script on the toy simulator (tests/helpers_toy_sim.py):
interrupted after its first round, resumed by the same command to the decision, its record in the database."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows, run_cli_subprocess
from helpers_toy_sim import install_toy_plugin

from qdepth_bench.report.sequential import log_evidence


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, str]:
    """The toy simulator registered as a plugin (an entry point) with a two-task suite of its own."""
    return install_toy_plugin(tmp_path, trials_per_task=10, max_steps=6)


def _comparison(db: Path) -> dict:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("select * from paired_comparisons").fetchone())
    finally:
        conn.close()


def _pairs_run(db: Path) -> int:
    try:
        return db_rows(db, "select max(pairs_run) from paired_comparisons")[0][0] or 0
    except sqlite3.OperationalError:  # the table does not exist yet
        return 0


@pytest.mark.slow
def test_sequential_compare_is_interrupted_resumed_and_decides(tmp_path, toy):
    """PushRight always succeeds and noop never does, so every pair is discordant for A: the test must name A
    at the first pair where the evidence reaches 2 / alpha, having run exactly those pairs (rounds of 4)."""
    db = tmp_path / "compare.sqlite"
    args = ["compare", "helpers_toy_sim:PushRight", "noop", "--suite", "line_reach", "--sequential"]
    args += ["--max-pairs", "20", "--round-size", "4", "--workers", "1", "--db", str(db)]
    exe = Path(sys.executable).with_name("qdepth-bench")
    env = {**os.environ, "COLUMNS": "200", **toy}
    first = subprocess.Popen([str(exe), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _pairs_run(db) < 4 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr.decode()
    assert "run the same command again" in stderr.decode()
    stopped = _comparison(db)
    assert stopped["status"] == "running" and stopped["pairs_run"] == 4

    resumed = run_cli_subprocess(*args, cwd=tmp_path, env=toy, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    needed = next(n for n in range(1, 20) if float(log_evidence(np.array(n), np.array(0))) >= math.log(2 / 0.05))
    record = _comparison(db)
    assert (record["status"], record["decision"], record["pairs_used"]) == ("decided", "a-better", needed)
    assert record["pairs_run"] == math.ceil(needed / 4) * 4 and record["pairs_lost"] == 0
    assert json.loads(record["design"]) == {
        **json.loads(record["design"]),
        "alpha": 0.05,
        "max_pairs": 20,
        "alternative": "two-sided",
    }
    assert json.loads(record["result"])["a_only"] == needed
    # each policy ran exactly the pairs read, once each, on the same places
    per_run = db_rows(db, "select run_id, count(*), sum(success) from episodes group by run_id")
    ran = record["pairs_run"]
    assert sorted((n, s) for _, n, s in per_run) == [(ran, 0), (ran, ran)]
    assert f"helpers_toy_sim:PushRight is better after {needed} pairs" in resumed.stdout

    again = run_cli_subprocess(*args, cwd=tmp_path, env=toy, timeout=300)
    assert again.returncode == 0 and f"after {needed} pairs" in again.stdout
    assert db_rows(db, "select count(*) from episodes")[0][0] == 2 * record["pairs_run"]

    other_alpha = run_cli_subprocess(*args, "--alpha", "0.1", cwd=tmp_path, env=toy, timeout=300)
    assert other_alpha.returncode == 2 and "same options" in other_alpha.stderr
    # 2 tasks x 10 episodes: 21 pairs would repeat episodes, and noop's repeats would copy its outcomes
    repeated = run_cli_subprocess(*args, "--max-pairs", "21", cwd=tmp_path, env=toy, timeout=300)
    assert repeated.returncode == 2 and "'noop' does not use the episode seed" in repeated.stderr

    # a fixed design on task 0's first 4 pairs: already recorded in the same runs, so it runs nothing
    fixed = ["compare", "helpers_toy_sim:PushRight", "noop", "--suite", "line_reach", "--tasks", "0"]
    fixed = run_cli_subprocess(*fixed, "--max-pairs", "4", "--db", str(db), cwd=tmp_path, env=toy, timeout=300)
    assert fixed.returncode == 0, fixed.stderr
    assert "exact McNemar over 4 pairs: p = 0.125" in fixed.stdout and "round:" not in fixed.stdout
    assert db_rows(db, "select count(*) from episodes")[0][0] == 2 * record["pairs_run"]
