"""What the scripted experts share: a bounded step of the end effector toward a goal, and gripper yaw."""

from __future__ import annotations

import numpy as np


def step_toward(position: np.ndarray, goal: np.ndarray, step_m: float, reached_m: float) -> tuple[np.ndarray, bool]:
    """The translation toward `goal`, at most `step_m` long, and whether `position` is within `reached_m` of it."""
    delta = goal - position
    norm = float(np.linalg.norm(delta))
    step = delta if norm <= step_m else delta * step_m / norm
    return step, norm < reached_m


def half_turn(angle: float) -> float:
    """An angle folded into [-pi/2, pi/2): a two-finger gripper is the same turned by half a turn."""
    return float((angle + np.pi / 2) % np.pi - np.pi / 2)
