"""Rotations as 3x3 matrices, roll/pitch/yaw, axis-angle vectors, intrinsic XYZ Euler angles and quaternions:
plain conventions that simulators (robot adapters) and policies (scripted experts) both speak, so neither
has to import the other for them.
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
