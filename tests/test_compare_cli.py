"""`qdepth-bench compare --sequential` and `ablation --sequential` through the console script on the toy simulator
(tests/helpers_toy_sim.py): interrupted after a first round, resumed by the same command to the decisions, their
records in the database and the ablation report."""

from __future__ import annotations

import csv
import io
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

from qdepth_bench.eval.sequential import log_evidence


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, str]:
    """The toy simulator registered as a plugin (an entry point) with a two-task suite of its own."""
    return install_toy_plugin(tmp_path, trials_per_task=10, max_steps=6)


def _comparisons(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("select * from paired_comparisons order by created_at")]
    finally:
        conn.close()


def _comparison(db: Path) -> dict:
    return _comparisons(db)[0]


def _interrupt_after(args: list[str], db: Path, pairs: int, cwd: Path, env: dict[str, str]) -> str:
    """Start the console script, send Ctrl-C once `pairs` pairs are recorded; its stderr (it must exit 130)."""
    exe = Path(sys.executable).with_name("qdepth-bench")
    # each toy step takes 50 ms: the rounds after `pairs` last long enough for the signal to land mid-run
    full_env = {**os.environ, "COLUMNS": "200", **env, "TOY_STEP_SECONDS": "0.05"}
    started = subprocess.Popen([str(exe), *args], cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _pairs_run(db) < pairs and started.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    started.send_signal(signal.SIGINT)
    _, stderr = started.communicate(timeout=120)
    assert started.returncode == 130, stderr.decode()
    return stderr.decode()


def _first_deciding(threshold: float, max_pairs: int) -> int:
    """Discordant pairs, all one way, at which the mixture's evidence first reaches `threshold`."""
    return next(n for n in range(1, max_pairs) if float(log_evidence(np.array(n), np.array(0))) >= math.log(threshold))


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
    assert "run the same command again" in _interrupt_after(args, db, 4, tmp_path, toy)
    stopped = _comparison(db)
    assert stopped["status"] == "running" and stopped["pairs_run"] == 4

    resumed = run_cli_subprocess(*args, cwd=tmp_path, env=toy, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    needed = _first_deciding(2 / 0.05, 20)
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


TOY_ABLATION = """
id: toy-seq
title: toy sequential ablation
suite: line_reach
columns: {Reach 0: '0', Reach 1: '1'}
episodes: 10
components: [Push]
full: helpers_toy_sim:PushRight
variants:
  - {policy: "helpers_toy_sim:PushRight", label: full, removes: []}
  - {policy: noop, label: no push, removes: [Push]}
  - {policy: "helpers_toy_sim:PushRightAgain", label: same push, removes: []}
"""


@pytest.mark.slow
def test_sequential_ablation_splits_alpha_is_interrupted_resumed_and_reported(tmp_path, toy):
    """Two variants against the full model (PushRight): noop never succeeds, so its comparison must name the full
    model at the first pair where the evidence reaches 2 / (alpha / 2), Bonferroni's share of each of the two
    comparisons; PushRightAgain succeeds wherever the full model does, so its comparison must stop for "no
    difference" at the first pair after which even all 20 - n remaining pairs going one way could not decide."""
    (Path(toy["QDEPTH_BENCH_CONTENT"]) / "ablations").mkdir()
    (Path(toy["QDEPTH_BENCH_CONTENT"]) / "ablations" / "toy-seq.yaml").write_text(TOY_ABLATION)
    db = tmp_path / "ablation.sqlite"
    args = ["ablation", "toy-seq", "--sequential", "--round-size", "6", "--workers", "1", "--db", str(db)]
    assert "continue the comparisons" in _interrupt_after(args, db, 6, tmp_path, toy)
    assert [c["status"] for c in _comparisons(db)] == ["running"]

    resumed = run_cli_subprocess(*args, "--format", "csv", cwd=tmp_path, env=toy, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    needed = _first_deciding(2 / (0.05 / 2), 20)  # 9 pairs: noop's comparison decides in its second round
    hopeless = next(n for n in range(1, 20) if float(log_evidence(np.array(20 - n), np.array(0))) < math.log(80))
    noop, same = _comparisons(db)
    assert (noop["status"], noop["decision"], noop["pairs_used"]) == ("decided", "a-better", needed)
    assert (same["status"], same["decision"], same["pairs_used"]) == ("decided", "no-difference", hopeless)
    for record in (noop, same):
        design = json.loads(record["design"])
        assert (design["alpha"], design["max_pairs"], design["alternative"]) == (0.025, 20, "two-sided")
        family = {"ablation": "toy-seq", "alpha": 0.05, "comparisons": 2, "correction": "Bonferroni"}
        assert design["family"] == family
    # the full model's run holds the pairs of the longer comparison, each variant's those of its own
    per_run = dict(db_rows(db, "select run_id, count(*) from episodes group by run_id"))
    assert per_run[noop["run_a"]] == max(noop["pairs_run"], same["pairs_run"]) and noop["run_a"] == same["run_a"]
    assert (per_run[noop["run_b"]], per_run[same["run_b"]]) == (noop["pairs_run"], same["pairs_run"])
    rows = {r["variant"]: r for r in csv.DictReader(io.StringIO(resumed.stdout)) if r["source"] == "ours"}
    assert rows["no push"]["sequential"] == f"full better @{needed}"
    assert rows["same push"]["sequential"] == f"no difference @{hopeless}" and rows["full"]["sequential"] == ""

    # once decided, the same command runs nothing more and the report shows the decisions with their design
    again = run_cli_subprocess(*args, cwd=tmp_path, env=toy, timeout=300)
    assert again.returncode == 0 and "round:" not in again.stdout
    assert f"full better @{needed}" in again.stdout and "split over 2 comparisons by Bonferroni" in again.stdout
    assert db_rows(db, "select count(*) from episodes")[0][0] == sum(per_run.values())
