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


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Roll/pitch/yaw about the fixed x, y, z axes (transforms3d's 'sxyz'): R = Rz(yaw) Ry(pitch) Rx(roll)."""
    roll, pitch, yaw = (float(v) for v in rpy)
    return _rz(yaw) @ _ry(pitch) @ _rx(roll)


def matrix_to_rpy(matrix: np.ndarray) -> np.ndarray:
    """Inverse of `rpy_to_matrix` (pitch in [-pi/2, pi/2])."""
    pitch = math.asin(-float(np.clip(matrix[2, 0], -1.0, 1.0)))
    roll = math.atan2(matrix[2, 1], matrix[2, 2])
    yaw = math.atan2(matrix[1, 0], matrix[0, 0])
    return np.array([roll, pitch, yaw])


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrix -> axis * angle (angle in [0, pi])."""
    cos = float(np.clip((np.trace(matrix) - 1.0) / 2.0, -1.0, 1.0))
    angle = math.acos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    if math.pi - angle < 1e-6:  # 180 degrees: R + I = 2 a a^T, so any non-zero column gives the axis
        half = (matrix + np.eye(3)) / 2.0
        column = int(np.argmax(np.diag(half)))
        return angle * half[:, column] / math.sqrt(half[column, column])
    axis = np.array([matrix[2, 1] - matrix[1, 2], matrix[0, 2] - matrix[2, 0], matrix[1, 0] - matrix[0, 1]])
    return angle * axis / (2.0 * math.sin(angle))


def axis_angle_to_matrix(vector: np.ndarray) -> np.ndarray:
    """Rodrigues: axis * angle -> rotation matrix."""
    angle = float(np.linalg.norm(vector))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = np.asarray(vector, dtype=np.float64) / angle
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def rpy_to_axis_angle(rpy: np.ndarray) -> np.ndarray:
    """The policy's roll/pitch/yaw delta as the axis-angle vector SimplerEnv's controllers read."""
    return matrix_to_axis_angle(rpy_to_matrix(rpy))


def matrix_to_euler_xyz_intrinsic(matrix: np.ndarray) -> np.ndarray:
    """Angles (a, b, c) with R = Rx(a) Ry(b) Rz(c): the "XYZ" convention ManiSkill3's controllers read."""
    b = math.asin(float(np.clip(matrix[0, 2], -1.0, 1.0)))
    a = math.atan2(-matrix[1, 2], matrix[2, 2])
    c = math.atan2(-matrix[0, 1], matrix[0, 0])
    return np.array([a, b, c])


def maniskill3_arm_action(
    delta_pos: np.ndarray, axis_angle: np.ndarray, target_pos: np.ndarray, current_pos: np.ndarray
) -> np.ndarray:
    """SimplerEnv's arm action (translation, axis-angle rotation about the current end-effector position)
    as ManiSkill3's (translation, XYZ Euler): the rotation re-expressed, the position target shifted by
    (R - I)(target - current), all in the robot base frame."""
    rotation = axis_angle_to_matrix(axis_angle)
    shift = (rotation - np.eye(3)) @ (np.asarray(target_pos) - np.asarray(current_pos))
    return np.concatenate([np.asarray(delta_pos) + shift, matrix_to_euler_xyz_intrinsic(rotation)])


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), SAPIEN's order -> rotation matrix."""
    w, x, y, z = (float(v) for v in q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


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
