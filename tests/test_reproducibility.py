"""Results anyone can re-check: machine fingerprints per run session, `verify`, repeats with clustered
intervals, and sample sizes. Real LIBERO runs through the real CLI on real SQLite files."""

from __future__ import annotations

import csv as csv_module
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import db_rows, episodes_recorded, run_cli_subprocess

from qdepth_bench.core.fingerprint import differences, machine_fingerprint, machine_hash, with_renderer
from qdepth_bench.eval.replay import sample_episodes
from qdepth_bench.report.stats import (
    clustered_interval,
    mcnemar_power,
    sample_size_independent,
    sample_size_paired,
    wilson_interval,
)
from qdepth_bench.results.store import Store

#: a short, seeded LIBERO run: the `random` policy draws from each episode's seed
SHORT = ("libero_object", "--policy", "random", "--tasks", "0", "--max-steps", "10", "--workers", "1")


def run(tmp_path, *args, env=None):
    return run_cli_subprocess(*args, "--db", str(tmp_path / "r.sqlite"), cwd=tmp_path, env=env)


def only_run_id(db) -> str:
    (run_id,) = db_rows(db, "select run_id from runs")[0]
    return run_id


def test_fingerprint_names_what_changes_results(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)  # some machines set it for every process
    fingerprint = machine_fingerprint({"numpy": "2.0"})
    assert {"cpu", "cores", "torch", "blas", "variables", "os", "python", "packages"} <= set(fingerprint)
    assert fingerprint["torch"]["cpu_capability"] and fingerprint["torch"]["threads"] >= 1
    assert any(lib.get("internal_api") for lib in fingerprint["blas"])  # numpy's BLAS, via threadpoolctl
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    other = machine_fingerprint({"numpy": "2.0"})
    assert machine_hash(other) != machine_hash(fingerprint)
    assert differences(fingerprint, other) == [("variables.OPENBLAS_CORETYPE", None, "Haswell")]
    # the renderer completes the fingerprint without changing the machine hash a resume compares
    assert machine_hash(with_renderer(other, "llvmpipe")) == machine_hash(other)


def test_stratified_sample_keeps_tasks_and_outcomes():
    frame = pd.DataFrame(
        {
            "task_id": [0] * 10 + [1] * 10,
            "episode_index": list(range(10)) * 2,
            "repeat": [0] * 20,
            "status": ["success"] * 2 + ["failure"] * 8 + ["success"] * 5 + ["failure"] * 4 + ["error"],
        }
    )
    sample = sample_episodes(frame, 6)
    assert len(sample) == 6 == len(set(sample))
    status = {(t, i): s for t, i, s in zip(frame.task_id, frame.episode_index, frame.status, strict=True)}
    strata = {(t, status[(t, i)]) for t, i, _ in sample}
    assert strata == {(0, "success"), (0, "failure"), (1, "success"), (1, "failure")}
    assert all(status[(t, i)] != "error" for t, i, _ in sample)
    assert sample_episodes(frame, 6) == sample  # seeded
    assert len(sample_episodes(frame, None)) == 19


@pytest.mark.slow
def test_verify_agrees_on_this_machine_and_finds_a_perturbed_episode(tmp_path):
    result = run(tmp_path, "run", *SHORT, "--episodes", "3")
    assert result.returncode == 0, result.stderr
    db = tmp_path / "r.sqlite"
    run_id = only_run_id(db)
    before = db_rows(db, "select * from episodes order by episode_index")

    same = run(tmp_path, "verify", run_id, "--episodes", "all", "--workers", "1")
    assert same.returncode == 0, same.stderr
    assert "agreement (outcome and steps): 3/3 = 100.0%" in same.stdout
    assert "same fingerprint as this machine" in same.stdout
    assert db_rows(db, "select * from episodes order by episode_index") == before  # the recording is untouched

    # a copy in which episode 1 had succeeded: verify must single out that episode, one way round
    copy = tmp_path / "copy" / "r.sqlite"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    conn.execute("update episodes set status = 'success', success = 1 where episode_index = 1")
    conn.commit()
    conn.close()
    differing = run_cli_subprocess(
        "verify", run_id, "--episodes", "all", "--workers", "1", "--db", str(copy), cwd=tmp_path
    )
    assert differing.returncode == 0, differing.stderr
    assert "agreement (outcome and steps): 2/3" in differing.stdout
    rows = [line for line in differing.stdout.splitlines() if re.search(r"│\s*0\s*│\s*\d\s*│\s*0\s*│", line)]
    assert len(rows) == 3 and [("no" in r.split("│")[-2]) for r in rows] == [False, True, False]
    assert "recorded 1/3, re-measured 0/3" in differing.stdout
    assert "exact McNemar p = 1 (1 succeeded only when recorded, 0 only when re-measured)" in differing.stdout

    # what cannot be re-run as recorded is one line naming it (package drift also names --any-versions)
    (versions,) = db_rows(copy, "select package_versions from runs")[0]
    for sql, params, expected in (
        ("update runs set package_versions = json_set(?, '$.numpy', '1.0')", (versions,), "--any-versions"),
        ("update runs set package_versions = ?, policy_config_hash = 'other'", (versions,), "config hash"),
    ):
        conn = sqlite3.connect(copy)
        conn.execute(sql, params)
        conn.commit()
        conn.close()
        refused = run_cli_subprocess("verify", run_id, "--db", str(copy), cwd=tmp_path)
        assert refused.returncode == 2 and expected in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_resume_on_another_fingerprint_says_so_and_shows_both_sessions(tmp_path):
    assert run(tmp_path, "run", *SHORT, "--episodes", "1").returncode == 0
    resumed = run(tmp_path, "run", *SHORT, "--episodes", "2", env={"LP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr
    db = tmp_path / "r.sqlite"
    run_id = only_run_id(db)
    assert f"run {run_id} now mixes machines" in resumed.stderr and "variables" in resumed.stderr
    sessions = db_rows(db, "select machine_hash, fingerprint from run_sessions order by started_at")
    assert len(sessions) == 2 and sessions[0][0] != sessions[1][0]
    assert "llvmpipe" in sessions[1][1] or "renderer" in sessions[1][1]  # the worker's GL context was read
    shown = run(tmp_path, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("│ finished │") >= 2 and "variables.LP_NUM_THREADS: 1" in shown.stdout
    listed = run(tmp_path, "runs", "list")
    assert " + " in listed.stdout  # two machine hashes
    table = run(tmp_path, "table", "libero_object", "--format", "csv")
    assert "2 machines" not in table.stdout  # csv carries the facts as fields...
    assert "2 machines" in run(tmp_path, "table", "libero_object").stdout  # ...the rendered table marks them


@pytest.mark.slow
def test_repeats_record_each_episode_n_times_and_resume_without_duplicates(tmp_path):
    args = ("run", *SHORT, "--episodes", "2", "--repeats", "3")
    assert run(tmp_path, *args).returncode == 0
    db = tmp_path / "r.sqlite"
    rows = db_rows(db, "select episode_index, repeat, seed from episodes order by episode_index, repeat")
    assert [(i, r) for i, r, _ in rows] == [(i, r) for i in range(2) for r in range(3)]
    assert len({seed for _, _, seed in rows}) == 6  # each repeat has a seed of its own
    again = run(tmp_path, *args)
    assert "6 episodes (6 already recorded)" in again.stdout
    assert db_rows(db, "select count(*) from episodes") == [(6,)]
    csv = run(tmp_path, "table", "libero_object", "--format", "csv").stdout.splitlines()
    header, ours = csv[0].split(","), next(line for line in csv if ",ours," in line and ",T0," in line)
    record = dict(zip(header, next(csv_module.reader([ours])), strict=True))
    assert record["repeats"] == "3" and record["repeat_rates"] == "[0.0, 0.0, 0.0]"
    low, high = wilson_interval(0, 6)
    assert float(record["ci_low"]) <= 100 * low + 1e-6 and float(record["ci_high"]) >= 100 * high - 1e-4

    noop = run(
        tmp_path,
        "run",
        "libero_object",
        "--policy",
        "noop",
        "--tasks",
        "0",
        "--episodes",
        "1",
        "--max-steps",
        "2",
        "--repeats",
        "2",
        "--workers",
        "1",
    )
    assert noop.returncode == 0 and "repeats will be identical" in noop.stderr


def test_clustered_interval_is_never_narrower_than_wilson():
    # 10 initial states x 3 repeats: hard states fail every repeat, easy ones succeed, a few are mixed
    successes, sizes = [3, 3, 3, 0, 0, 0, 0, 2, 1, 0], [3] * 10
    low, high = clustered_interval(successes, sizes)
    naive = wilson_interval(sum(successes), sum(sizes))
    assert low < naive[0] and high > naive[1]  # strongly clustered: wider
    # outcomes spread evenly over the states carry no clustering: at least Wilson's
    even = clustered_interval([1] * 10, [3] * 10)
    assert even[0] <= wilson_interval(10, 30)[0] + 1e-12 and even[1] >= wilson_interval(10, 30)[1] - 1e-12


def test_sample_sizes_match_the_textbook():
    # R's documented example, power.prop.test(p1 = .50, p2 = .75, power = .90): n = 76.65 per group
    assert abs(sample_size_independent(0.5, 0.75, power=0.9) - 76.65) < 1
    # Connor's approximation for McNemar's test: at its n the exact test has about the asked-for power
    n = math.ceil(sample_size_paired(0.5, 0.7))
    assert 0.75 <= mcnemar_power(0.5, 0.7, n) <= 0.85
    # policies that fail the same episodes (less discordance) need fewer pairs
    assert sample_size_paired(0.5, 0.7, discordance=0.25) < sample_size_paired(0.5, 0.7)
    with pytest.raises(ValueError, match="impossible"):
        sample_size_paired(0.5, 0.75, discordance=0.1)


def test_power_command_prints_both_designs(cli):
    result = cli("power", "--baseline", "0.5", "--delta", "0.25", "--power", "0.9", db=False)
    assert result.exit_code == 0, result.output
    assert re.search(r"independent episodes .*│ 77 ", result.output)
    assert "paired (same episodes)" in result.output
    bad = cli("power", "--baseline", "0.9", "--delta", "0.2", db=False)
    assert bad.exit_code == 2 and "between 0 and 1" in bad.output


@pytest.mark.slow
def test_a_killed_run_reads_interrupted_not_running(tmp_path):
    """kill -9 of the driver leaves the run 'running' in its row; its dead owner makes it 'interrupted'."""
    db = tmp_path / "r.sqlite"
    exe = os.path.join(os.path.dirname(sys.executable), "qdepth-bench")
    args = [
        exe,
        "run",
        "libero_object",
        "--policy",
        "noop",
        "--tasks",
        "0",
        "--episodes",
        "4",
        "--max-steps",
        "20",
        "--workers",
        "1",
        "--db",
        str(db),
    ]
    driver = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and not episodes_recorded(db):
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert db_rows(db, "select status from runs") == [("running",)]
    store = Store(db)
    assert store.run_status(store.runs()[0]) == "interrupted"
    listed = run_cli_subprocess("runs", "list", "--db", str(db), cwd=tmp_path)
    assert "interrupted" in listed.stdout and "running" not in listed.stdout
    resumed = run_cli_subprocess(*args[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert db_rows(db, "select count(*) from episodes") == [(4,)]
    assert db_rows(db, "select status from runs") == [("finished",)]
    assert [s for (s,) in db_rows(db, "select status from run_sessions order by started_at")] == ["running", "finished"]
