"""Real ManiSkill3 WidowX episodes on CPU (stand-in table where the stage mesh is missing)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import db_rows, run_cli_subprocess

pytestmark = [
    pytest.mark.slow,
    # found, not imported: ManiSkill3 reads its asset folder once, at import, and the backend sets it first
    pytest.mark.skipif(importlib.util.find_spec("mani_skill") is None, reason="mani-skill is not installed"),
]


@pytest.mark.parametrize("task", [0, 2, 3])  # carrot, spoon, cube stacking
def test_short_episodes_run_and_record_their_grid_cells(tmp_path, task):
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        "simpler_widowx",
        "--policy",
        "random",
        "--tasks",
        str(task),
        "--episodes",
        "2",
        "--max-steps",
        "4",
        "--workers",
        "1",
        "--stand-ins",
        "--db",
        str(db),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = db_rows(
        db,
        "select episode_index, status, steps, variant, partial_success, metrics from episodes order by episode_index",
    )
    assert [(r[0], r[2]) for r in rows] == [(0, 4), (1, 4)]
    assert all(r[1] in ("success", "failure") for r in rows)
    assert json.loads(rows[1][3])["episode_id"] == 1  # the grid cell is recorded with the episode
    for row in rows:
        metrics = json.loads(row[5])
        assert row[4] in (0.0, 1.0) and metrics["stand_in_table"] is True
        assert isinstance(metrics["success_simpler_rule"], bool)


def test_scripted_expert_puts_the_carrot_on_the_plate(tmp_path):
    """All 24 carrot episodes under the protocol's 60 steps (stand-in table): at least half succeed."""
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        "simpler_widowx",
        "--policy",
        "scripted-widowx",
        "--tasks",
        "0",
        "--workers",
        "2",
        "--stand-ins",
        "--db",
        str(db),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = db_rows(db, "select status, steps, metrics from episodes")
    assert len(rows) == 24 and all(steps == 60 for _, steps, _ in rows)  # success is read at the last step
    successes = sum(status == "success" for status, _, _ in rows)
    assert successes >= 12, successes
    simpler_rule = sum(json.loads(m)["success_simpler_rule"] for _, _, m in rows)
    assert simpler_rule >= 12, simpler_rule


def test_missing_eggplant_mesh_is_one_line_naming_the_file(tmp_path):
    from qdepth_bench.sims.simpler.maniskill3 import asset_dir

    mesh = asset_dir() / "data/tasks/bridge_v2_real2sim_dataset/custom/models/eggplant/textured.glb"
    if mesh.exists():
        pytest.skip("these ManiSkill3 assets carry the eggplant's visual mesh")
    result = run_cli_subprocess(
        "run",
        "simpler_widowx",
        "--policy",
        "random",
        "--tasks",
        "1",
        "--episodes",
        "1",
        "--max-steps",
        "2",
        "--workers",
        "1",
        "--stand-ins",
        "--db",
        str(tmp_path / "r.sqlite"),
        cwd=tmp_path,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "textured.glb" in last and "MS_ASSET_DIR" in last


def test_prepackaged_draws_run_and_are_recorded_as_non_standard(tmp_path):
    """SimplerEnv's other mode: layouts drawn from the env's RNG by recorded seeds, `repeats` per grid cell."""
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        "simpler_widowx",
        "--policy",
        "random",
        "--tasks",
        "0",
        "--episodes",
        "2",
        "--max-steps",
        "2",
        "--grid-mode",
        "prepackaged",
        "--grid-repeats",
        "3",
        "--workers",
        "1",
        "--stand-ins",
        "--db",
        str(db),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    variants = [json.loads(v) for (v,) in db_rows(db, "select variant from episodes order by episode_index")]
    assert variants == [{"mode": "prepackaged", "seed": 0}, {"mode": "prepackaged", "seed": 1}]
    ((protocol, standard),) = db_rows(db, "select protocol, standard_protocol from runs")
    assert json.loads(protocol)["grid_mode"] == "prepackaged" and json.loads(protocol)["trials_per_task"] == 72
    assert standard == 0


def test_a_cell_after_other_cells_equals_the_cell_alone_and_workers_do_not_matter(tmp_path):
    """Each episode depends only on its grid cell and seed: a cell run in an env that ran other cells first
    is frame for frame the cell run alone, and 1 and 2 workers record the same rows."""
    from test_lazy_rendering import drive, maniskill3_state

    from qdepth_bench.registry.policies import make_policy
    from qdepth_bench.registry.sims import make_backend
    from qdepth_bench.registry.suites import suite_registry

    spec = suite_registry().suites["simpler_widowx"].with_overrides({"max_steps": 12, "stand_ins": True})
    backend, policy = make_backend(spec), make_policy("scripted-widowx")
    episodes = backend.episodes([0], 3, 7)

    def in_one_env(sequence):
        env = backend.make_env(0, policy.requirements)
        try:
            return [drive(env, policy, e, 12, 4, maniskill3_state) for e in sequence][-1]
        finally:
            env.close()

    alone, after = in_one_env([episodes[2]]), in_one_env(episodes)
    assert alone[:3] == after[:3] and len(alone[3]) == len(after[3])
    for a, b in zip(alone[3], after[3], strict=True):
        np.testing.assert_array_equal(a[0]["main"], b[0]["main"])
        assert a[3] == b[3]  # simulator state at every chunk boundary

    rows = {}
    for workers in ("1", "2"):
        db = tmp_path / f"w{workers}.sqlite"
        args = [
            "run",
            "simpler_widowx",
            "--policy",
            "scripted-widowx",
            "--tasks",
            "0",
            "--episodes",
            "4",
            "--stand-ins",
        ]
        result = run_cli_subprocess(*args, "--max-steps", "12", "--workers", workers, "--db", str(db), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        rows[workers] = db_rows(db, "select episode_index, status, steps, metrics from episodes order by episode_index")
    assert rows["1"] == rows["2"] and len(rows["1"]) == 4


def test_missing_stage_without_stand_ins_is_one_line_before_any_episode(tmp_path):
    db = tmp_path / "r.sqlite"
    args = ["run", "simpler_widowx", "--policy", "random", "--tasks", "0", "--episodes", "1", "--max-steps", "2"]
    result = run_cli_subprocess(*args, "--workers", "1", "--db", str(db), cwd=tmp_path)
    assert result.returncode != 0
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "bridge_table_1_v1" in line and "--stand-ins" in line and "MS_ASSET_DIR" in line
    assert db_rows(db, "select count(*) from episodes where status != 'error'") == [(0,)]
