"""SIMPLER adapters pinned with hand-computed cases (docs/protocols.md, "Robot adapters")."""

from __future__ import annotations

import math

import numpy as np

from qdepth_bench.core.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_xyz_intrinsic,
    matrix_to_rpy,
    quat_wxyz_to_matrix,
    rpy_to_axis_angle,
    rpy_to_matrix,
)
from qdepth_bench.sims.simpler.adapters import (
    BRIDGE_TOP_DOWN,
    StickyGripper,
    bridge_proprio,
    google_proprio,
    maniskill3_arm_action,
    robot_base_quat,
    widowx_gripper,
)


def test_roll_pitch_yaw_to_axis_angle_by_hand():
    np.testing.assert_allclose(rpy_to_axis_angle([0, 0, math.pi / 2]), [0, 0, math.pi / 2], atol=1e-12)
    np.testing.assert_allclose(rpy_to_axis_angle([-0.3, 0, 0]), [-0.3, 0, 0], atol=1e-12)
    # roll 90 then pitch 90 about the fixed axes: Ry(90) Rx(90) = [[0,1,0],[0,0,-1],[-1,0,0]], trace 0 ->
    # 120 degrees about (1, 1, -1)/sqrt(3)
    expected = (2 * math.pi / 3) * np.array([1, 1, -1]) / math.sqrt(3)
    np.testing.assert_allclose(rpy_to_axis_angle([math.pi / 2, math.pi / 2, 0]), expected, atol=1e-12)
    np.testing.assert_allclose(
        rpy_to_matrix([math.pi / 2, math.pi / 2, 0]), [[0, 1, 0], [0, 0, -1], [-1, 0, 0]], atol=1e-12
    )


def test_rotations_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        vector = rng.normal(size=3)
        vector *= rng.uniform(0, math.pi - 1e-3) / np.linalg.norm(vector)
        np.testing.assert_allclose(matrix_to_axis_angle(axis_angle_to_matrix(vector)), vector, atol=1e-9)
        rpy = rng.uniform(-1.2, 1.2, 3)
        np.testing.assert_allclose(matrix_to_rpy(rpy_to_matrix(rpy)), rpy, atol=1e-9)
    half_turn = axis_angle_to_matrix([0, math.pi, 0])
    np.testing.assert_allclose(np.abs(matrix_to_axis_angle(half_turn)), [0, math.pi, 0], atol=1e-6)


def test_intrinsic_xyz_euler_by_hand():
    a, b, c = 0.1, -0.2, 0.3
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    np.testing.assert_allclose(matrix_to_euler_xyz_intrinsic(rx @ ry @ rz), [a, b, c], atol=1e-12)


def test_maniskill3_action_rotates_about_the_current_position():
    # a quarter turn about z with the target 10 cm ahead (x) of the current position: SimplerEnv swings the
    # target to 10 cm along y, i.e. a shift of (-0.1, +0.1, 0) on top of the commanded translation
    action = maniskill3_arm_action(
        delta_pos=[0.01, 0, 0], axis_angle=[0, 0, math.pi / 2], target_pos=[0.3, 0.0, 0.2], current_pos=[0.2, 0.0, 0.2]
    )
    np.testing.assert_allclose(action[:3], [0.01 - 0.1, 0.1, 0.0], atol=1e-12)
    np.testing.assert_allclose(action[3:], [0, 0, math.pi / 2], atol=1e-12)
    # with the target at the current position there is no shift
    still = maniskill3_arm_action([0, 0, 0], [0.2, 0, 0], [0.2, 0.1, 0.3], [0.2, 0.1, 0.3])
    np.testing.assert_allclose(still, [0, 0, 0, 0.2, 0, 0], atol=1e-12)


def test_grippers():
    assert widowx_gripper(0.51) == 1.0 and widowx_gripper(0.5) == -1.0 and widowx_gripper(-1) == -1.0
    sticky = StickyGripper(repeats=15)
    assert sticky(0.5) == 0.0  # a' = 0: below 0.5, not held
    commands = [sticky(0.0)] + [sticky(1.0) for _ in range(14)]  # close (+1) is held for 15 steps
    assert commands == [1.0] * 15
    assert sticky(1.0) == -1.0  # the hold is over: open (-1) starts a new hold
    assert [sticky(0.0) for _ in range(14)] == [-1.0] * 14
    assert sticky(0.0) == 1.0


def test_bridge_proprio_is_relative_to_a_top_down_gripper():
    # the top-down gripper (tool x axis pointing down) is the Bridge frame's zero orientation
    top_down = [math.cos(math.pi / 4), 0, math.sin(math.pi / 4), 0]  # wxyz: +90 degrees about y
    state = bridge_proprio([0.3, 0.0, 0.1], top_down, 0.8)
    np.testing.assert_allclose(state, [0.3, 0.0, 0.1, 0, 0, 0, 0.8], atol=1e-6)
    # the same gripper turned 90 degrees about the vertical: yaw pi/2 in the Bridge frame
    turned = rpy_to_matrix([0, 0, math.pi / 2]) @ BRIDGE_TOP_DOWN
    w = math.sqrt(1 + np.trace(turned)) / 2
    quat = [
        w,
        (turned[2, 1] - turned[1, 2]) / (4 * w),
        (turned[0, 2] - turned[2, 0]) / (4 * w),
        (turned[1, 0] - turned[0, 1]) / (4 * w),
    ]
    np.testing.assert_allclose(bridge_proprio([0, 0, 0], quat, 1.0)[3:6], [0, 0, math.pi / 2], atol=1e-6)


def test_google_proprio_orders_the_quaternion_xyzw():
    state = google_proprio([0.5, -0.1, 0.9], [0.9, 0.1, 0.2, 0.3], 0.25)
    np.testing.assert_allclose(state, [0.5, -0.1, 0.9, 0.1, 0.2, 0.3, 0.9, 0.25], atol=1e-6)


def test_robot_base_quaternion_composes_the_yaw_with_a_half_turn():
    np.testing.assert_allclose(robot_base_quat(0.0), [0, 0, 0, 1], atol=1e-12)  # SimplerEnv's centre (w=0, z=1)
    # yaw -0.09 (move near) then the half turn: a rotation of pi - 0.09 about z
    q = robot_base_quat(-0.09)
    angle = 2 * math.atan2(q[3], q[0])
    assert abs(abs(angle) - (math.pi - 0.09)) < 1e-9 or abs(abs(angle) - (math.pi + 0.09)) < 1e-9
    np.testing.assert_allclose(quat_wxyz_to_matrix(q), rpy_to_matrix([0, 0, math.pi - 0.09]), atol=1e-12)
