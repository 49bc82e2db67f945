"""The SimplerEnv backend: grid cells -> SimplerEnv's env arguments (always), real episodes (when installed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows, run_cli_subprocess

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.grid import task_cells
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.sims.simpler.simpler_env import build_kwargs, reset_options

HAS_SIMPLER_ENV = importlib.util.find_spec("simpler_env") is not None
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


@pytest.mark.skipif(HAS_SIMPLER_ENV, reason="SimplerEnv is installed here")
def test_missing_simpler_env_is_one_line_with_the_install_command():
    with pytest.raises(UserError) as info:
        make_backend(suite_registry().suites["simpler_google"])
    message = str(info.value)
    assert "\n" not in message and "git clone --recurse-submodules https://github.com/simpler-env/SimplerEnv" in message


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SIMPLER_ENV, reason="SimplerEnv is not installed (not on PyPI; see `qdepth-bench doctor`)")
@pytest.mark.parametrize("suite, task", [("simpler_widowx", "0"), ("simpler_google", "0")])
def test_real_simpler_env_episodes_record_their_grid_cells(tmp_path, suite, task):
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        suite,
        "--backend",
        "simpler_env",
        "--policy",
        "random",
        "--tasks",
        task,
        "--episodes",
        "2",
        "--max-steps",
        "3",
        "--workers",
        "1",
        "--db",
        str(db),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = db_rows(db, "select episode_index, status, steps, variant from episodes order by episode_index")
    assert [(r[0], r[2]) for r in rows] == [(0, 3), (1, 3)] and all(r[1] in ("success", "failure") for r in rows)
    assert json.loads(rows[1][3])["mode"] == "grid"
    assert db_rows(db, "select distinct backend from runs") == [("simpler_env",)]
