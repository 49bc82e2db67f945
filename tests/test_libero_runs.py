"""Real LIBERO episodes through the real CLI into a real SQLite file: record once, resume after a kill."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import db_rows, run_cli_subprocess

pytestmark = pytest.mark.slow

# Short, non-standard episodes keep CI fast; the protocol override is recorded and flagged.
SHORT = ["--max-steps", "8"]


def episode_rows(db: Path) -> list[tuple]:
    return db_rows(db, "select run_id, task_id, episode_index, status, steps from episodes "
                       "order by task_id, episode_index")


def recorded(db: Path) -> int:
    """Episodes recorded so far by a run in progress (0 before the database and its schema exist)."""
    try:
        return len(episode_rows(db)) if db.exists() else 0
    except sqlite3.OperationalError:  # the file exists, its tables are not created yet
        return 0


def test_run_twice_records_each_episode_once(tmp_path):
    db = tmp_path / "r.sqlite"
    args = ["run", "libero_object", "--policy", "random", "--tasks", "0", "--episodes", "2", *SHORT,
            "--db", str(db), "--video", str(tmp_path / "videos")]
    first = run_cli_subprocess(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    rows = episode_rows(db)
    assert [(r[1], r[2]) for r in rows] == [(0, 0), (0, 1)]
    assert all(r[3] in ("success", "failure") and r[4] <= 8 for r in rows)
    videos = sorted(p.name for p in (tmp_path / "videos").rglob("*.mp4"))
    assert len(videos) == 2 and videos[0].startswith("libero_object_task00_ep000_")
    second = run_cli_subprocess(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "2 already recorded" in second.stdout
    assert episode_rows(db) == rows
    conn = sqlite3.connect(db)
    run = conn.execute("select status, standard_protocol, protocol, seed, git_commit, package_versions "
                       "from runs").fetchall()
    conn.close()
    assert len(run) == 1
    status, standard, protocol, seed, _, versions = run[0]
    assert status == "finished" and standard == 0 and seed == 7
    assert '"max_steps":8' in protocol.replace(" ", "") and "mujoco" in versions


def test_killed_run_resumes_only_missing_episodes(tmp_path):
    db = tmp_path / "r.sqlite"
    args = ["run", "libero_object", "--policy", "noop", "--tasks", "0", "--episodes", "4", *SHORT, "--db", str(db)]
    exe = Path(sys.executable).with_name("qdepth-bench")
    proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline and recorded(db) < 2:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert b"run the same command again to continue" in stderr
    done_before = episode_rows(db)
    assert 2 <= len(done_before) < 4
    conn = sqlite3.connect(db)
    assert conn.execute("select status from runs").fetchone()[0] == "interrupted"
    conn.close()
    resumed = run_cli_subprocess(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done_before)} already recorded" in resumed.stdout
    after = episode_rows(db)
    assert [(r[1], r[2]) for r in after] == [(0, i) for i in range(4)]
    assert after[: len(done_before)] == done_before


def test_broken_renderer_is_one_line_naming_doctor_and_records_nothing(tmp_path):
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess("run", "libero_object", "--policy", "noop", "--tasks", "0", "--episodes", "1",
                                *SHORT, "--db", str(db), cwd=tmp_path, env={"MUJOCO_GL": "bogus"})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "qdepth-bench doctor" in errors[0] and "MUJOCO_GL=bogus" in errors[0]
    assert episode_rows(db) == []
    conn = sqlite3.connect(db)
    assert conn.execute("select status from runs").fetchone()[0] == "failed"
    conn.close()


def test_reused_env_starts_each_episode_like_a_fresh_one():
    """One env per task is reset softly between episodes; what the policy sees must not depend on that."""
    import numpy as np

    from qdepth_bench.policy import PolicyRequirements
    from qdepth_bench.registry import make_backend, suite_registry

    backend = make_backend(suite_registry().suites["libero_object"])
    requirements = PolicyRequirements(cameras=("main", "wrist"))
    episodes = backend.episodes([0], 3, 7)
    reused = backend.make_env(0, requirements)
    try:
        reused.reset(episodes[0])
        rng = np.random.default_rng(0)
        for _ in range(30):  # move the arm and the gripper so the next reset has something to undo
            reused.step(rng.uniform(-1, 1, 7))
        second = reused.reset(episodes[2])
    finally:
        reused.close()
    fresh_env = backend.make_env(0, requirements)
    try:
        fresh = fresh_env.reset(episodes[2])
    finally:
        fresh_env.close()
    for role in ("main", "wrist"):
        np.testing.assert_array_equal(second.images[role], fresh.images[role])
    np.testing.assert_allclose(second.state, fresh.state, atol=1e-9)


def test_corrupt_asset_is_one_line_naming_doctor(tmp_path):
    """An asset folder with one damaged file (a truncated object model) stops the run before any episode."""
    from qdepth_bench.envs import libero_assets

    source, _ = libero_assets.find_assets()
    if source is None:
        pytest.skip("LIBERO assets are not installed")
    farm = tmp_path / "assets"
    damaged = "stable_hope_objects/alphabet_soup/alphabet_soup.xml"  # libero_object task 0's object
    for rel in libero_assets.read_manifest(libero_assets.manifest_path()):
        (farm / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == damaged:
            (farm / rel).write_bytes((source / rel).read_bytes()[:200])
        else:
            (farm / rel).symlink_to(source / rel)
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess("run", "libero_object", "--policy", "noop", "--tasks", "0", "--episodes", "1",
                                *SHORT, "--db", str(db), cwd=tmp_path,
                                env={libero_assets.ASSETS_ENV: str(farm)})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "qdepth-bench doctor" in errors[0], result.stderr
    assert episode_rows(db) == []
