"""The SIMPLER episode grids of suites/simpler.yaml expand to the published episode counts."""

from __future__ import annotations

from pathlib import Path

import yaml

from qdepth_bench.envs.simpler_grid import expand_grid, task_cells

SUITES = yaml.safe_load((Path(__file__).parents[1] / "suites" / "simpler.yaml").read_text())["suites"]


def counts(suite: str) -> dict[str, int]:
    return {task["key"]: len(task_cells(task)) for task in SUITES[suite]["tasks"]}


def test_published_episode_counts():
    assert counts("simpler_google") == {"pick_coke_can": 300, "move_near": 240, "drawer": 216, "apple_in_drawer": 108}
    assert counts("simpler_widowx") == {"put_carrot_on_plate": 24, "put_eggplant_in_basket": 24,
                                        "put_spoon_on_towel": 24, "stack_green_on_yellow": 24}


def test_cells_are_ordered_and_zipped_axes_move_together():
    coke = task_cells(SUITES["simpler_google"]["tasks"][0])
    assert coke[0] == {"mode": "grid", "urdf": "default", "orientation": "horizontal", "object_x": -0.35,
                       "object_y": -0.02}
    assert coke[1]["object_y"] == 0.09 and coke[5]["object_x"] == -0.2925
    drawer = task_cells(SUITES["simpler_google"]["tasks"][2])
    for cell in drawer:
        assert cell["overlay"] == f"open_drawer_{cell['pose_name']}.png"
    assert {tuple(c["robot_pose"]) for c in drawer if c["pose_name"] == "b2"} == {(0.851, 0.035, 0.0)}
    assert [c["episode_id"] for c in task_cells(SUITES["simpler_widowx"]["tasks"][0])] == list(range(24))


def test_prepackaged_mode_counts_repeats():
    carrot = SUITES["simpler_widowx"]["tasks"][0]
    cells = task_cells(carrot, mode="prepackaged", repeats=3)
    assert len(cells) == 72 and cells[-1] == {"mode": "prepackaged", "seed": 71}
    assert len(expand_grid({"a": {"values": [1, 2]}, "b": {"range": 3}})) == 6
