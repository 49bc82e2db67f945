"""The SIMPLER episode grids of content/suites/simpler.yaml expand to the published episode counts."""

from __future__ import annotations

import pytest
import yaml

from qdepth_bench.core.episode_grid import expand_grid, task_cells
from qdepth_bench.registry.content import builtin_root

SUITES = yaml.safe_load((builtin_root() / "suites" / "simpler.yaml").read_text())["suites"]


def counts(suite: str) -> dict[str, int]:
    return {task["key"]: len(task_cells(task)) for task in SUITES[suite]["tasks"]}


def test_published_episode_counts():
    assert counts("simpler_google") == {"pick_coke_can": 300, "move_near": 240, "drawer": 216, "apple_in_drawer": 108}
    assert counts("simpler_widowx") == {
        "put_carrot_on_plate": 24,
        "put_eggplant_in_basket": 24,
        "put_spoon_on_towel": 24,
        "stack_green_on_yellow": 24,
    }


def test_cells_are_ordered_and_zipped_axes_move_together():
    coke = task_cells(SUITES["simpler_google"]["tasks"][0])
    assert coke[0] == {
        "mode": "grid",
        "urdf": "default",
        "orientation": "horizontal",
        "object_x": -0.35,
        "object_y": -0.02,
    }
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


def test_grid_mode_override_derives_trials_and_is_non_standard():
    from qdepth_bench.registry.suites import suite_registry

    widowx = suite_registry().suites["simpler_widowx"]
    assert widowx.task_episode_counts() == [24, 24, 24, 24]
    drawn = widowx.with_overrides({"grid_mode": "prepackaged", "grid_repeats": 3})
    assert drawn.task_episode_counts() == [72, 72, 72, 72] and drawn.episodes_per_task == 72
    assert not drawn.is_standard() and drawn.protocol_hash() != widowx.protocol_hash()
    google = suite_registry().suites["simpler_google"]
    assert google.task_episode_counts() == [300, 240, 216, 108]
    same = google.with_overrides({"grid_mode": "grid"})  # the protocol's own value is no override
    assert same.is_standard() and same.protocol_hash() == google.protocol_hash()


def test_repeats_without_prepackaged_mode_are_refused():
    from qdepth_bench.core.errors import UserError
    from qdepth_bench.registry.suites import suite_registry

    with pytest.raises(UserError, match="--grid-mode prepackaged"):
        suite_registry().suites["simpler_widowx"].with_overrides({"grid_repeats": 3})
