"""SIMPLER robot adapters: policy output -> env action, env state -> policy proprio (docs/protocols.md,
"Robot adapters", as open-pi-zero does it), and the ManiSkill3 rotation correction.

Policies emit [dx, dy, dz, droll, dpitch, dyaw, gripper]. SimplerEnv's controllers read the rotation as an
axis-angle vector and rotate the target about the current end-effector position; ManiSkill3's port reads
intrinsic XYZ Euler angles and leaves the position target alone. `maniskill3_arm_action` turns the
SimplerEnv meaning into ManiSkill3's: same rotation as Euler angles, plus the position shift
(R - I)(target - current) that rotating about the current position implies.
"""

from __future__ import annotations

import math

import numpy as np

from qdepth_bench.core.rotations import (
    axis_angle_to_matrix,
    matrix_to_euler_xyz_intrinsic,
    matrix_to_rpy,
    quat_wxyz_to_matrix,
)


def maniskill3_arm_action(
    delta_pos: np.ndarray, axis_angle: np.ndarray, target_pos: np.ndarray, current_pos: np.ndarray
) -> np.ndarray:
    """SimplerEnv's arm action (translation, axis-angle rotation about the current end-effector position)
    as ManiSkill3's (translation, XYZ Euler): the rotation re-expressed, the position target shifted by
    (R - I)(target - current), all in the robot base frame."""
    rotation = axis_angle_to_matrix(axis_angle)
    shift = (rotation - np.eye(3)) @ (np.asarray(target_pos) - np.asarray(current_pos))
    return np.concatenate([np.asarray(delta_pos) + shift, matrix_to_euler_xyz_intrinsic(rotation)])


#: Bridge end-effector orientations are relative to a top-down gripper, not to the robot base: the
#: orientation R is reported as the roll/pitch/yaw of R @ BRIDGE_TOP_DOWN.T (bridge_data_robot's default
#: rotation; open-pi-zero converts SimplerEnv's state the same way).
BRIDGE_TOP_DOWN = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


def bridge_proprio(pos: np.ndarray, quat_wxyz: np.ndarray, openness: float) -> np.ndarray:
    """WidowX proprio: eef position (3) + roll/pitch/yaw in the Bridge frame (3) + gripper openness (1)."""
    rpy = matrix_to_rpy(quat_wxyz_to_matrix(quat_wxyz) @ BRIDGE_TOP_DOWN.T)
    return np.concatenate([np.asarray(pos, dtype=np.float64), rpy, [openness]]).astype(np.float32)


def google_proprio(pos: np.ndarray, quat_wxyz: np.ndarray, closedness: float) -> np.ndarray:
    """Google-robot proprio: eef position (3) + quaternion in x, y, z, w order (4) + gripper closedness (1)."""
    quat_xyzw = np.roll(np.asarray(quat_wxyz, dtype=np.float64), -1)
    return np.concatenate([np.asarray(pos, dtype=np.float64), quat_xyzw, [closedness]]).astype(np.float32)


def robot_base_quat(yaw: float) -> np.ndarray:
    """SimplerEnv's robot base orientation for a grid yaw: the yaw about z composed with its centre quaternion
    (0, 0, 0, 1), a half turn about z; as (w, x, y, z)."""
    return np.array([-math.sin(yaw / 2), 0.0, 0.0, math.cos(yaw / 2)])


def widowx_gripper(action: float) -> float:
    """Bridge policies: > 0.5 means open (+1), otherwise close (-1)."""
    return 1.0 if action > 0.5 else -1.0


class StickyGripper:
    """Google robot gripper, as open-pi-zero drives it: a' = 2a - 1, command -a' (+1 closes); once the
    command's magnitude exceeds 0.5 it is held for `repeats` steps (the real robot's gripper is slow)."""

    def __init__(self, repeats: int = 15) -> None:
        self.repeats = repeats
        self.reset()

    def reset(self) -> None:
        self.held: float | None = None
        self.count = 0

    def __call__(self, action: float) -> float:
        command = -(2.0 * action - 1.0)
        if self.held is None and abs(command) > 0.5:
            self.held = command
        if self.held is not None:
            command = self.held
            self.count += 1
            if self.count == self.repeats:
                self.reset()
        return command
