"""Real LIBERO episodes through the real CLI into a real SQLite file: record once, resume after a kill."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows, episodes_recorded, run_cli_subprocess

pytestmark = pytest.mark.slow

# Short, non-standard episodes keep CI fast; the protocol override is recorded and flagged.
SHORT = ["--max-steps", "8"]


def episode_rows(db: Path) -> list[tuple]:
    return db_rows(
        db, "select run_id, task_id, episode_index, status, steps from episodes order by task_id, episode_index"
    )


def test_run_twice_records_each_episode_once(tmp_path):
    db = tmp_path / "r.sqlite"
    args = [
        "run",
        "libero_object",
        "--policy",
        "random",
        "--tasks",
        "0",
        "--episodes",
        "2",
        *SHORT,
        "--db",
        str(db),
        "--video",
        str(tmp_path / "videos"),
    ]
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
    run = conn.execute(
        "select status, standard_protocol, protocol, seed, git_commit, package_versions from runs"
    ).fetchall()
    conn.close()
    assert len(run) == 1
    status, standard, protocol, seed, _, versions = run[0]
    assert status == "finished" and standard == 0 and seed == 7
    assert '"max_steps":8' in protocol.replace(" ", "") and "mujoco" in versions


def test_killed_run_resumes_only_missing_episodes(tmp_path):
    db = tmp_path / "r.sqlite"
    # 6 episodes: enough left after the second that the Ctrl-C lands mid-run even on a loaded machine
    args = ["run", "libero_object", "--policy", "noop", "--tasks", "0", "--episodes", "6", *SHORT, "--db", str(db)]
    exe = Path(sys.executable).with_name("qdepth-bench")
    proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline and episodes_recorded(db) < 2:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert b"run the same command again to continue" in stderr
    done_before = episode_rows(db)
    assert 2 <= len(done_before) < 6
    conn = sqlite3.connect(db)
    assert conn.execute("select status from runs").fetchone()[0] == "interrupted"
    conn.close()
    resumed = run_cli_subprocess(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done_before)} already recorded" in resumed.stdout
    after = episode_rows(db)
    assert [(r[1], r[2]) for r in after] == [(0, i) for i in range(6)]
    assert set(done_before) <= set(after)  # recorded rows kept as they were (2 workers finish in any order)


def test_broken_renderer_is_one_line_naming_doctor_and_records_nothing(tmp_path):
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        "libero_object",
        "--policy",
        "noop",
        "--tasks",
        "0",
        "--episodes",
        "1",
        *SHORT,
        "--db",
        str(db),
        cwd=tmp_path,
        env={"MUJOCO_GL": "bogus"},
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "qdepth-bench doctor" in errors[0] and "MUJOCO_GL=bogus" in errors[0]
    assert episode_rows(db) == []
    conn = sqlite3.connect(db)
    assert conn.execute("select status from runs").fetchone()[0] == "failed"
    conn.close()


STEPS = 24  # every step compares the full simulator state, so a difference shows within the first steps


def _libero_reference(backend, policy, task_id: int, init_index: int, seed: int) -> list[tuple]:
    """One episode the way the reference loops run it (openpi's LIBERO example): LIBERO's own env with its
    standard hard reset, built fresh, seeded, initial state set, settle steps, chunks executed open-loop."""
    from libero.libero.envs import OffScreenRenderEnv

    from qdepth_bench.core.imaging import resize_bilinear, rotate
    from qdepth_bench.core.policy import EpisodeContext, ObservationBatch
    from qdepth_bench.sims.libero.backend import proprio_state

    protocol = backend.spec.protocol
    task = backend.suite.get_task(task_id)
    size = int(protocol["render_size"])
    env = OffScreenRenderEnv(
        bddl_file_name=str(backend.bddl_root / task.problem_folder / task.bddl_file),
        camera_heights=size,
        camera_widths=size,
        camera_names=["agentview"],
    )
    try:
        env.seed(int(protocol["env_seed"]))
        env.reset()
        obs = env.set_init_state(np.asarray(backend.suite.get_task_init_states(task_id))[init_index])
        for _ in range(int(protocol["settle_steps"])):
            obs, _, _, _ = env.step(np.asarray(protocol["noop_action"], dtype=np.float64))
        info, key = backend.task_info(task_id), f"reference/{task_id}/{init_index}"
        policy.reset(EpisodeContext(key, info, seed))
        trajectory = []
        for t in range(STEPS):
            image = resize_bilinear(rotate(obs["agentview_image"], int(protocol["image_rotation_deg"])), 224)[None]
            state = proprio_state(obs)[None]
            trajectory.append((image, state, env.sim.get_state().flatten()))
            if t % 4 == 0:
                chunk = policy.act(ObservationBatch([key], {"main": image}, state, [info.instruction]))[0]
            obs, _, _, _ = env.step(np.asarray(chunk[t % 4], dtype=np.float64))
        return trajectory
    finally:
        env.close()


def _harness_episode(env, policy, episode, seed: int) -> list[tuple]:
    from qdepth_bench.core.policy import EpisodeContext

    batch = env.reset(episode)
    key = f"reference/{episode.task_id}/{episode.episode_index}"
    policy.reset(EpisodeContext(key, env.task, seed))
    trajectory = []
    for t in range(STEPS):
        trajectory.append((batch.images["main"], batch.state, env.sim_env.sim.get_state().flatten()))
        if t % 4 == 0:
            batch.keys = [key]
            chunk = policy.act(batch)[0]
        batch = env.step(chunk[t % 4]).observation
    return trajectory


def test_episodes_follow_libero_hard_reset_trajectories_bit_for_bit():
    """The harness reuses one env per task; every episode, the first and those after others, must follow
    the trajectory LIBERO's own hard reset of a fresh env gives: images, proprio and the whole MuJoCo state
    at every step, under the shipped (deterministic given its seed) qdepth policy."""
    from qdepth_bench.registry.policies import make_policy
    from qdepth_bench.registry.sims import make_backend
    from qdepth_bench.registry.suites import suite_registry

    backend = make_backend(suite_registry().suites["libero_object"])
    policy = make_policy("qdepth")
    order = [2, 1, 2]  # the repeated state runs after another episode in the same env
    for task_id in (0, 3):
        # LIBERO's env is built and closed first: closing one EGL env while another renders corrupts its frames
        references = {i: _libero_reference(backend, policy, task_id, i, 100 + i) for i in set(order)}
        episodes = {e.episode_index: e for e in backend.episodes([task_id], max(order) + 1, 7)}
        env = backend.make_env(task_id, policy.requirements)
        try:
            for i in order:
                ours = _harness_episode(env, policy, episodes[i], 100 + i)
                for t, (got, want) in enumerate(zip(ours, references[i], strict=True)):
                    for name, a, b in zip(("image", "state", "simulator state"), got, want, strict=True):
                        assert a.dtype == b.dtype and np.array_equal(a, b), (
                            f"task {task_id} state {i}: {name} differs at step {t}"
                        )
        finally:
            env.close()


def test_policy_receives_the_simulators_float64_state(tmp_path):
    """Proprio crosses the worker boundary in the simulator's dtype; the checking policy errors otherwise."""
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        "libero_object",
        "--policy",
        "helpers_policies:StateDtypePolicy",
        "--tasks",
        "0",
        "--episodes",
        "1",
        "--workers",
        "1",
        *SHORT,
        "--db",
        str(db),
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 0, result.stderr
    assert db_rows(db, "select status, error, policy_calls, actions_per_call from episodes") == [("failure", "", 8, 1)]


def test_one_or_two_workers_in_any_order_record_identical_episodes(tmp_path):
    """An episode's outcome, steps and final simulator state depend only on the episode: not on the number
    of workers, which worker ran it, or which episodes ran before it in the same env."""
    common = ["--policy", "qdepth", "--episodes", "2", "--max-steps", "40"]
    one, two = tmp_path / "one.sqlite", tmp_path / "two.sqlite"
    runs = [
        (one, ["--tasks", "0,3", "--workers", "1"]),
        (two, ["--tasks", "3", "--workers", "2"]),
        (two, ["--tasks", "0", "--workers", "2"]),
    ]
    for db, args in runs:
        result = run_cli_subprocess("run", "libero_object", *common, *args, "--db", str(db), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    query = "select task_id, episode_index, status, steps, metrics from episodes order by task_id, episode_index"
    rows = db_rows(one, query)
    assert len(rows) == 4 and all('"sim_state_digest"' in r[4] for r in rows)
    assert rows == db_rows(two, query)


def test_env_state_is_the_simulators_proprio():
    from qdepth_bench.core.policy import PolicyRequirements
    from qdepth_bench.registry.sims import make_backend
    from qdepth_bench.registry.suites import suite_registry
    from qdepth_bench.sims.libero.backend import quat_to_axis_angle

    backend = make_backend(suite_registry().suites["libero_object"])
    env = backend.make_env(0, PolicyRequirements())
    try:
        batch = env.reset(backend.episodes([0], 1, 7)[0])
        raw = env.raw_observation
        expected = np.concatenate(
            [raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        )
        assert batch.state.dtype == np.float64 and np.array_equal(batch.state[0], expected)
    finally:
        env.close()


def test_corrupt_asset_is_one_line_naming_doctor(tmp_path):
    """An asset folder with one damaged file (a truncated object model) stops the run before any episode."""
    from qdepth_bench.sims.libero import assets as libero_assets

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
    result = run_cli_subprocess(
        "run",
        "libero_object",
        "--policy",
        "noop",
        "--tasks",
        "0",
        "--episodes",
        "1",
        *SHORT,
        "--db",
        str(db),
        cwd=tmp_path,
        env={libero_assets.ASSETS_ENV: str(farm)},
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "qdepth-bench doctor" in errors[0], result.stderr
    assert episode_rows(db) == []
