"""The SimplerEnv backend: grid cells -> SimplerEnv's env arguments (always); real episodes through the CLI
with env workers in SimplerEnv's own environment (wherever setup built it: CI does, from ../shared/vendor)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows, run_cli_subprocess

from qdepth_bench.core.episode_grid import task_cells
from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.sims.simpler.environment import environment_dir, importable_here, read_config
from qdepth_bench.sims.simpler.simpler_env import build_kwargs, reset_options

SIMPLER_PYTHON = environment_dir() / "bin" / "python"
HAS_SIMPLER_ENV = importable_here() or SIMPLER_PYTHON.is_file()
needs_simpler_env = pytest.mark.skipif(
    not HAS_SIMPLER_ENV, reason="SimplerEnv is not set up (QDEPTH_EXTRAS=...,simpler_env bash scripts/setup.sh)"
)
OVERLAYS = Path("/overlays")


def _task(suite: str, key: str) -> tuple[dict, dict]:
    spec = suite_registry().suites[suite]
    task = next(t for t in spec.extra["tasks"] if t["key"] == key)
    return spec.protocol, task


def test_coke_can_cell_builds_like_simpler_envs_evaluator():
    protocol, task = _task("simpler_google", "pick_coke_can")
    cells = task_cells(task)
    cell = next(c for c in cells if c["urdf"] == "default" and c["orientation"] == "horizontal")
    env_id, kwargs = build_kwargs(protocol, task, cell, OVERLAYS, 80)
    assert env_id == "GraspSingleOpenedCokeCanInScene-v0"
    assert kwargs["lr_switch"] is True and kwargs["urdf_version"] is None
    assert (kwargs["robot"], kwargs["sim_freq"], kwargs["control_freq"]) == ("google_robot_static", 513, 3)
    assert kwargs["control_mode"].startswith("arm_pd_ee_delta_pose_align_interpolate_by_planner")
    assert kwargs["scene_name"] == "google_pick_coke_can_1_v4" and kwargs["max_episode_steps"] == 80
    assert kwargs["rgb_overlay_path"] == str(OVERLAYS / "google_coke_can_real_eval_1.png")
    assert kwargs["rgb_overlay_cameras"] == ["overhead_camera"] and "shader_dir" not in kwargs
    standing = next(
        c for c in cells if c["urdf"] == "recolor_cabinet_visual_matching_1" and c["orientation"] == "standing"
    )
    _, kwargs = build_kwargs(protocol, task, standing, OVERLAYS, 80)
    assert kwargs["upright"] is True and kwargs["urdf_version"] == "recolor_cabinet_visual_matching_1"
    options = reset_options(task, cell)
    np.testing.assert_allclose(options["robot_init_options"]["init_xy"], [0.35, 0.20])
    np.testing.assert_allclose(options["robot_init_options"]["init_rot_quat"], [0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(options["obj_init_options"]["init_xy"], [cell["object_x"], cell["object_y"]])


def test_drawer_cell_ray_traces_with_its_own_pose_and_overlay():
    protocol, task = _task("simpler_google", "drawer")
    cell = task_cells(task)[0]
    env_id, kwargs = build_kwargs(protocol, task, cell, OVERLAYS, 113)
    assert env_id == cell["env_id"] == "OpenTopDrawerCustomInScene-v0"
    assert next(iter(kwargs)) == "shader_dir" and kwargs["shader_dir"] == "rt"  # first, as SimplerEnv orders it
    assert (kwargs["station_name"], kwargs["light_mode"], kwargs["disable_bad_material"]) == (
        "mk_station_recolor",
        "simple",
        True,
    )
    assert kwargs["rgb_overlay_path"] == str(OVERLAYS / f"open_drawer_{cell['pose_name']}.png")
    options = reset_options(task, cell)
    np.testing.assert_allclose(options["robot_init_options"]["init_xy"], cell["robot_pose"][:2])
    np.testing.assert_allclose(options["obj_init_options"]["init_xy"], [0, 0])


def test_bridge_cells_use_their_camera_setup_and_episode_ids():
    protocol, carrot = _task("simpler_widowx", "put_carrot_on_plate")
    cell = task_cells(carrot)[5]
    _, kwargs = build_kwargs(protocol, carrot, cell, OVERLAYS, 60)
    assert (kwargs["robot"], kwargs["scene_name"], kwargs["sim_freq"], kwargs["control_freq"]) == (
        "widowx",
        "bridge_table_1_v1",
        500,
        5,
    )
    assert kwargs["control_mode"] == "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos"
    assert "urdf_version" not in kwargs and kwargs["rgb_overlay_cameras"] == ["3rd_view_camera"]
    assert reset_options(carrot, cell)["obj_init_options"] == {"episode_id": 5}
    _, eggplant = _task("simpler_widowx", "put_eggplant_in_basket")
    _, kwargs = build_kwargs(protocol, eggplant, task_cells(eggplant)[0], OVERLAYS, 120)
    assert (kwargs["robot"], kwargs["scene_name"]) == ("widowx_sink_camera_setup", "bridge_table_1_v2")
    assert kwargs["rgb_overlay_path"].endswith("bridge_sink.png")
    np.testing.assert_allclose(
        reset_options(eggplant, task_cells(eggplant)[0])["robot_init_options"]["init_xy"], [0.127, 0.06]
    )


def test_prepackaged_cells_leave_the_layout_to_the_env():
    protocol, task = _task("simpler_google", "move_near")
    cell = task_cells(task, "prepackaged", 1)[3]
    env_id, kwargs = build_kwargs(protocol, task, cell, OVERLAYS, 80)
    assert env_id == "MoveNearGoogleBakedTexInScene-v0" and kwargs == {"obs_mode": "rgbd", "prepackaged_config": True}
    assert reset_options(task, cell) == {}


def test_backend_choice_is_part_of_the_protocol():
    spec = suite_registry().suites["simpler_widowx"]
    other = spec.with_backend("simpler_env")
    assert other.backend == "simpler_env" and other.protocol_hash() != spec.protocol_hash()
    with pytest.raises(UserError, match="--backend"):
        suite_registry().suites["simpler_google"].with_backend("maniskill3")


@pytest.mark.skipif(importable_here(), reason="SimplerEnv imports in this environment")
def test_missing_simpler_env_is_one_line_with_the_setup_command(monkeypatch, tmp_path):
    monkeypatch.setenv("QDEPTH_SIMPLERENV", str(tmp_path / "nowhere"))
    with pytest.raises(UserError) as info:
        make_backend(suite_registry().suites["simpler_google"])
    message = str(info.value)
    assert "\n" not in message and "simpler_env bash scripts/setup.sh" in message and "nowhere" in message


def _run(tmp_path: Path, db: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli_subprocess("run", *args, "--backend", "simpler_env", "--db", str(db), cwd=tmp_path)


def _rows(db: Path) -> list[tuple]:
    return db_rows(
        db, "select task_id, episode_index, status, steps, metrics, error from episodes order by task_id, episode_index"
    )


@pytest.mark.slow
@needs_simpler_env
@pytest.mark.parametrize(
    "suite, task",
    [
        ("simpler_widowx", "0"),  # carrot on plate
        ("simpler_widowx", "2"),  # spoon on towel
        ("simpler_widowx", "3"),  # stack blocks
        ("simpler_google", "0"),  # pick coke can
    ],
)
def test_real_simpler_env_episodes_record_their_grid_cells(tmp_path, suite, task):
    db = tmp_path / "r.sqlite"
    common = ("--policy", "random", "--tasks", task, "--episodes", "2", "--max-steps", "3", "--workers", "1")
    result = _run(tmp_path, db, suite, *common, "--stand-ins")
    assert result.returncode == 0, result.stderr
    rows = db_rows(db, "select episode_index, status, steps, variant, metrics from episodes order by episode_index")
    assert [(r[0], r[2]) for r in rows] == [(0, 3), (1, 3)] and all(r[1] in ("success", "failure") for r in rows)
    assert json.loads(rows[1][3])["mode"] == "grid" and all(json.loads(r[4])["stand_in_table"] for r in rows)
    assert db_rows(db, "select distinct backend, standard_protocol from runs") == [("simpler_env", 0)]
    if read_config(environment_dir()).get("vulkan_layer"):  # the layer's work is in the machine fingerprint
        (fingerprint,) = db_rows(db, "select fingerprint from run_sessions")[0]
        assert "dropped VK_KHR_external_semaphore_fd" in fingerprint


@pytest.mark.slow
@needs_simpler_env
def test_missing_stage_and_mesh_are_one_line_before_any_episode(tmp_path):
    db = tmp_path / "r.sqlite"
    common = ("--policy", "random", "--episodes", "1", "--max-steps", "2", "--workers", "1")
    stage = _run(tmp_path, db, "simpler_widowx", "--tasks", "0", *common)
    assert stage.returncode != 0
    (line,) = [x for x in stage.stderr.splitlines() if x.startswith("error:")]
    assert "stages/bridge_table_1_v1.glb" in line and "--stand-ins" in line
    for suite, task, model in (("simpler_widowx", "1", "eggplant"), ("simpler_google", "1", "redbull_can")):
        mesh = _run(tmp_path, db, suite, "--tasks", task, *common, "--stand-ins")  # visual meshes the vendor copy lacks
        assert mesh.returncode != 0
        (line,) = [x for x in mesh.stderr.splitlines() if x.startswith("error:")]
        assert f"{model}/textured" in line and "ManiSkill2_real2sim" in line
    assert db_rows(db, "select count(*) from episodes where status != 'error'") == [(0,)]


@pytest.mark.slow
@needs_simpler_env
def test_scripted_widowx_on_all_24_carrot_cells_and_1_vs_2_workers_agree(tmp_path):
    """The WidowX expert through SimplerEnv's controller on stand-in stages; 1 and 2 workers record the same rows."""
    two, one = tmp_path / "two.sqlite", tmp_path / "one.sqlite"
    common = ("simpler_widowx", "--policy", "scripted-widowx", "--tasks", "0", "--stand-ins")
    result = _run(tmp_path, two, *common, "--workers", "2")
    assert result.returncode == 0, result.stderr
    rows = _rows(two)
    assert len(rows) == 24 and all(r[2] in ("success", "failure") for r in rows)
    assert sum(r[2] == "success" for r in rows) >= 12, [r[2] for r in rows]
    result = _run(tmp_path, one, *common, "--workers", "1", "--episodes", "6")
    assert result.returncode == 0, result.stderr
    assert _rows(one) == rows[:6]


@pytest.mark.slow
@needs_simpler_env
def test_scripted_google_expert_picks_coke_cans_through_the_sticky_gripper(tmp_path):
    """The Google robot's controller, sticky gripper and proprio conventions end to end: the expert steers by
    the proprio pose and closes through the sticky command; lying and upright cans alike."""
    db = tmp_path / "r.sqlite"
    args = ("simpler_google", "--policy", "scripted-google", "--tasks", "0", "--episodes", "4", "--stand-ins")
    result = _run(tmp_path, db, *args, "--workers", "2")
    assert result.returncode == 0, result.stderr
    rows = _rows(db)
    assert len(rows) == 4 and all(r[3] == 80 for r in rows)
    assert sum(r[2] == "success" for r in rows) >= 3, [r[2] for r in rows]


#: runs in SimplerEnv's environment: cell 3 alone in a fresh env, then cells 0-3 one after another in one env
_CELL_AFTER_CELL = """
import json, sys
import numpy as np
from qdepth_bench.core.policy import PolicyRequirements
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
spec = suite_registry().suites["simpler_widowx"].with_backend("simpler_env").with_overrides({"stand_ins": True})
backend = make_backend(spec)
episodes = backend.episodes([0], 4, 0)
actions = np.random.default_rng(0).uniform(-1, 1, (6, 7)) * [0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1]
def play(env, episode):
    frames = [env.reset(episode).images["main"][0]]
    for a in actions:
        frames.append(env.step(a).observation.images["main"][0])
    return np.stack(frames), env.last_observation.state
alone = backend.make_env(0, PolicyRequirements(cameras=("main",)))
frames_alone, state_alone = play(alone, episodes[3])
alone.close()
shared = backend.make_env(0, PolicyRequirements(cameras=("main",)))
for episode in episodes[:3]:
    play(shared, episode)
frames_after, state_after = play(shared, episodes[3])
print(json.dumps({"frames_equal": bool(np.array_equal(frames_alone, frames_after)),
                  "state_equal": bool(np.array_equal(state_alone, state_after)), "frames": len(frames_after)}))
"""


#: runs in SimplerEnv's environment: the same chunked actions rendered lazily and at every step
_LAZY_AND_EAGER = """
import json
import numpy as np
from qdepth_bench.core.policy import PolicyRequirements
from qdepth_bench.eval.episode import EpisodeRunner
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
spec = suite_registry().suites["simpler_widowx"].with_backend("simpler_env").with_overrides({"stand_ins": True})
backend = make_backend(spec)
env = backend.make_env(0, PolicyRequirements(cameras=("main",)))
chunks = np.random.default_rng(1).uniform(-1, 1, (4, 4, 7)) * [0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1]
def play(episode, every_step):
    env.render_every_step = every_step
    runner = EpisodeRunner(env, episode, 16)
    seen, obs = [], runner.start()
    for chunk in chunks:
        seen.append((obs.images["main"].copy(), obs.state.copy()))
        obs = runner.run_chunk(chunk)
        if obs is None:
            break
    return runner.result.status, runner.result.steps, seen
same = []
for episode in backend.episodes([0], 2, 3):
    (s1, n1, a), (s2, n2, b) = play(episode, False), play(episode, True)
    same.append(s1 == s2 and n1 == n2 == 16 and len(a) == len(b) == 4
                and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b)))
print(json.dumps(same))
"""


def _in_simpler_env(code: str) -> str:
    """Run `code` where SimplerEnv's env workers run; its last line of output."""
    from qdepth_bench.registry.sims import worker_environment

    environment = worker_environment(suite_registry().suites["simpler_widowx"].with_backend("simpler_env"))
    python = environment.python if environment else sys.executable
    variables = {**os.environ, **(environment.variables if environment else {})}
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=variables, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@needs_simpler_env
def test_a_cell_run_after_other_cells_equals_the_cell_alone_frame_for_frame():
    outcome = json.loads(_in_simpler_env(_CELL_AFTER_CELL))
    assert outcome == {"frames_equal": True, "state_equal": True, "frames": 7}


@pytest.mark.slow
@needs_simpler_env
def test_lazy_rendering_matches_rendering_every_step():
    """Outcome, steps, and pixels and proprio at every chunk boundary, rendered lazily and at every step."""
    assert json.loads(_in_simpler_env(_LAZY_AND_EAGER)) == [True, True]


@pytest.mark.slow
@needs_simpler_env
@pytest.mark.skipif(
    shutil.which("nvidia-smi") is None,
    reason="slow on CPU: the drawer tasks ray trace (SimplerEnv's shader_dir=rt), minutes per step; runs on GPU",
)
def test_ray_traced_drawer_tasks_run(tmp_path):
    db = tmp_path / "r.sqlite"
    common = ("--policy", "random", "--tasks", "2,3", "--episodes", "1", "--max-steps", "2", "--workers", "2")
    result = _run(tmp_path, db, "simpler_google", *common, "--stand-ins")
    assert result.returncode == 0, result.stderr
    assert [r[2] for r in _rows(db)] in (["success", "failure"], ["failure", "failure"], ["failure", "success"])
