"""The rollout engine on real LIBERO workers: same results whatever the worker count, crashed and hung
workers recorded and retried, policy errors kept apart from failures, and the Ray executor."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows, run_cli_subprocess

from qdepth_bench.core.policy import ObservationBatch
from qdepth_bench.eval.messages import Abort, Fatal, Observation, Prepare, Setup, StartEpisode, WorkerSettings
from qdepth_bench.eval.pool import renderer_threads
from qdepth_bench.registry.sims import make_backend


def outcome_rows(db: Path) -> list[tuple]:
    return db_rows(
        db,
        "select task_id, episode_index, seed, status, steps, attempts, error from episodes "
        "order by task_id, episode_index",
    )


def run_status(db: Path) -> str:
    return db_rows(db, "select status from runs")[0][0]


def env_workers(parent: int) -> list[int]:
    """Pids of the spawned env worker processes of a running `qdepth-bench run`."""
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    pids = []
    for pid in out:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"multiprocessing.spawn" in cmdline and b"resource_tracker" not in cmdline:
            pids.append(int(pid))
    return pids


def start_run(args: list[str], cwd: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("qdepth-bench")
    return subprocess.Popen(
        [str(exe), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def wait_for_workers(proc: subprocess.Popen, n: int, settle_s: float) -> list[int]:
    """The worker pids once `n` exist, after letting them run `settle_s` seconds (into their episode)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        pids = env_workers(proc.pid)
        if len(pids) >= n:
            time.sleep(settle_s)
            return pids
        time.sleep(0.2)
    raise AssertionError("env workers did not start")


def test_concat_stacks_rows_in_order():
    def one(key: str, value: int) -> ObservationBatch:
        return ObservationBatch(
            [key],
            {"main": np.full((1, 2, 2, 3), value, np.uint8)},
            np.full((1, 8), value),
            [f"do {key}"],
            privileged=[{"k": key}],
        )

    batch = ObservationBatch.concat([one("a", 1), one("b", 2), one("c", 3)])
    assert batch.keys == ["a", "b", "c"] and batch.instructions == ["do a", "do b", "do c"]
    assert batch.images["main"].shape == (3, 2, 2, 3) and list(batch.images["main"][:, 0, 0, 0]) == [1, 2, 3]
    assert list(batch.state[:, 0]) == [1, 2, 3] and [p["k"] for p in batch.privileged] == ["a", "b", "c"]


def test_renderer_threads_split_cores_between_workers(monkeypatch):
    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    assert renderer_threads(1, cores=2) == {"LP_NUM_THREADS": "2"}
    assert renderer_threads(2, cores=2) == {"LP_NUM_THREADS": "0"}
    assert renderer_threads(2, cores=8) == {"LP_NUM_THREADS": "4"}
    monkeypatch.setenv("LP_NUM_THREADS", "3")
    assert renderer_threads(2, cores=2) == {}


SHORT = ["--max-steps", "10"]


@pytest.mark.slow
def test_one_and_two_workers_record_the_same_episodes(tmp_path):
    """A deterministic policy (random, seeded per episode) gives the same rows whatever the worker count."""
    rows = {}
    for workers in (1, 2):
        db = tmp_path / f"w{workers}.sqlite"
        result = run_cli_subprocess(
            "run",
            "libero_object",
            "--policy",
            "random",
            "--tasks",
            "0,1",
            "--episodes",
            "2",
            *SHORT,
            "--workers",
            str(workers),
            "--db",
            str(db),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        rows[workers] = outcome_rows(db)
    assert len(rows[1]) == 4 and rows[1] == rows[2]


@pytest.mark.slow
def test_killed_worker_is_recorded_and_the_run_completes(tmp_path):
    db = tmp_path / "r.sqlite"
    proc = start_run(
        [
            "run",
            "libero_object",
            "--policy",
            "noop",
            "--tasks",
            "0",
            "--episodes",
            "2",
            "--workers",
            "1",
            "--db",
            str(db),
        ],
        tmp_path,
    )
    # full-length episodes (280 steps): on a quiet machine two 60-step episodes were over before the kill
    pids = wait_for_workers(proc, 1, settle_s=8)
    os.kill(pids[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert "error (will run it again)" in stdout and "exited with code -9" in stdout
    rows = outcome_rows(db)
    assert [r[:2] for r in rows] == [(0, 0), (0, 1)]
    assert all(r[3] in ("success", "failure") for r in rows)
    assert sorted(r[5] for r in rows) == [1, 2]  # the killed episode (whichever was running) ran again
    assert run_status(db) == "finished"
    log = next((tmp_path / "logs").glob("*.log")).read_text()
    assert "status=error" in log and "exited with code -9" in log


@pytest.mark.slow
def test_hung_worker_is_restarted_after_the_episode_timeout(tmp_path):
    db = tmp_path / "r.sqlite"
    proc = start_run(
        [
            "run",
            "libero_object",
            "--policy",
            "noop",
            "--tasks",
            "0",
            "--episodes",
            "1",
            "--max-steps",
            "30",
            "--workers",
            "1",
            "--episode-timeout",
            "25",
            "--db",
            str(db),
        ],
        tmp_path,
    )
    pids = wait_for_workers(proc, 1, settle_s=2)
    os.kill(pids[0], signal.SIGSTOP)  # a simulator stuck forever
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert "took over 25 s on this episode" in stdout
    rows = outcome_rows(db)
    assert len(rows) == 1 and rows[0][3] in ("success", "failure") and rows[0][5] == 2


@pytest.mark.slow
def test_policy_errors_are_errors_not_failures(tmp_path):
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        "libero_object",
        "--policy",
        "helpers_policies:RaisingPolicy",
        "--tasks",
        "0",
        "--episodes",
        "1",
        *SHORT,
        "--workers",
        "1",
        "--db",
        str(db),
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 3, result.stderr  # a run that ends with errors says so in its exit status
    assert "1 of 1 episodes ended in errors" in result.stderr and "failed 3 times" in result.stderr
    rows = outcome_rows(db)
    assert len(rows) == 1 and rows[0][3] == "error" and rows[0][5] == 3
    assert "policy: RuntimeError: model exploded" in rows[0][6]
    assert "errors 1 · retried 2" in result.stdout  # the progress line
    assert "err 1" in result.stdout  # the table shows the error apart, with no success rate


@pytest.mark.slow
def test_ray_executor_writes_the_same_rows_as_local(tmp_path):
    pytest.importorskip("ray")
    rows = {}
    for executor in ("local", "ray"):
        db = tmp_path / f"{executor}.sqlite"
        result = run_cli_subprocess(
            "run",
            "libero_object",
            "--policy",
            "random",
            "--tasks",
            "0,1",
            "--episodes",
            "1",
            *SHORT,
            "--workers",
            "2",
            "--executor",
            executor,
            "--db",
            str(db),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        rows[executor] = outcome_rows(db)
    assert len(rows["local"]) == 2 and rows["ray"] == rows["local"]


def test_worker_started_early_keeps_the_env_it_built_only_for_the_same_view():
    """A worker started while the policy loads builds its first task's env for the main camera; the run's own
    settings keep that env when the policy needs the same view and drop it otherwise. The early build is
    charged to the first episode (env build and the worker's own time), never lost from the timings."""
    from qdepth_bench.core.policy import PolicyRequirements
    from qdepth_bench.eval.worker import EnvWorker
    from qdepth_bench.registry.suites import suite_registry

    spec = suite_registry().suites["libero_object"].with_overrides({"max_steps": 10})
    worker = EnvWorker(WorkerSettings(spec, PolicyRequirements(), ""))
    try:
        assert worker.handle(Prepare(0)) is None
        built, prepared_s = worker.env, worker.prepared_s
        assert built is not None and prepared_s > 0
        same_view = PolicyRequirements(chunk_size=4, action_dim=7)
        worker.handle(Setup(WorkerSettings(spec, same_view, "run-a")))
        assert worker.env is built
        episode = make_backend(spec).episodes([0], 1, 7)[0]
        reply = worker.handle(StartEpisode(episode))
        assert isinstance(reply, Observation) and reply.kind == "obs" and worker.env is built
        assert worker.runner is not None and worker.runner.result.timing["env_build_s"] == prepared_s
        assert reply.seconds >= prepared_s  # the worker's own time includes the build done ahead
        worker.handle(Abort())
        worker.handle(Setup(WorkerSettings(spec, PolicyRequirements(cameras=("main", "wrist")), "run-a")))
        assert worker.env is None  # built without the wrist camera: rebuilt by the next episode
    finally:
        worker.close()


def test_worker_that_cannot_set_up_answers_each_episode_with_one_line():
    """A worker started early for a suite whose simulator is not set up prints no traceback; its episodes get
    the setup error as one `fatal` line (the CLI has already said the same before planning)."""
    from qdepth_bench.core.policy import PolicyRequirements
    from qdepth_bench.eval.worker import EnvWorker
    from qdepth_bench.registry.suites import suite_registry

    spec = suite_registry().suites["libero_object"]
    broken = dataclasses.replace(spec, backend="no_such_simulator")
    worker = EnvWorker(WorkerSettings(broken, PolicyRequirements(), ""))
    assert worker.backend is None and worker.setup_error
    assert worker.handle(Prepare(0)) is None and worker.env is None
    episode = make_backend(spec).episodes([0], 1, 7)[0]
    assert worker.handle(StartEpisode(episode)) == Fatal(worker.setup_error)
