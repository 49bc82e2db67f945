"""The LIBERO protocol data pinned against ../shared/docs/protocols.md, and the observation conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qdepth_bench.core.imaging import resize_bilinear, rotate
from qdepth_bench.registry.suites import suite_registry

# From the protocol table (LIBERO section).
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
N_TASKS = {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10, "libero_90": 90}


@pytest.mark.parametrize("suite", sorted(MAX_STEPS))
def test_protocol_table(suite):
    spec = suite_registry().suites[suite]
    p = spec.protocol
    assert p["max_steps"] == MAX_STEPS[suite]
    assert spec.n_tasks == N_TASKS[suite]
    assert p["trials_per_task"] == 50
    assert p["settle_steps"] == 10
    assert p["env_seed"] == 7
    assert p["render_size"] == 256 and p["policy_image_size"] == 224 and p["image_rotation_deg"] == 180
    assert p["noop_action"] == [0, 0, 0, 0, 0, 0, -1]
    assert p["state_dim"] == 8 and len(p["action_low"]) == 7
    assert p["success"] == "env_done"
    assert spec.is_standard()


def test_spatial_max_steps_alternative_is_recorded_and_standard():
    spec = suite_registry().suites["libero_spatial"]
    assert spec.alternatives["max_steps"] == {"openpi": 220, "lerobot": 280}
    lerobot = spec.with_overrides({"max_steps": 280})
    assert lerobot.is_standard() and lerobot.protocol_hash() != spec.protocol_hash()
    assert not spec.with_overrides({"max_steps": 100}).is_standard()
    assert not spec.with_overrides({"env_seed": 8}).is_standard()


def test_long_alias_and_paper_group():
    registry = suite_registry()
    assert registry.aliases["libero_long"] == "libero_10"
    assert registry.groups["libero"] == ("libero_spatial", "libero_object", "libero_goal", "libero_10")


libero = pytest.importorskip("qdepth_bench.sims.libero.backend", reason="the LIBERO stack is not installed")


def test_quaternion_to_axis_angle():
    half = math.pi / 4  # 90 degrees about z
    axis_angle = libero.quat_to_axis_angle(np.array([0.0, 0.0, math.sin(half), math.cos(half)]))
    np.testing.assert_allclose(axis_angle, [0.0, 0.0, math.pi / 2], atol=1e-9)
    np.testing.assert_array_equal(libero.quat_to_axis_angle(np.array([0.0, 0.0, 0.0, 1.0])), np.zeros(3))


def test_image_is_rotated_180_then_resized():
    frame = np.zeros((256, 256, 3), np.uint8)
    frame[:128, :128] = 255  # top-left quadrant
    out = resize_bilinear(rotate(frame, 180), 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out[200, 200].min() == 255 and out[20, 20].max() == 0  # now bottom-right
