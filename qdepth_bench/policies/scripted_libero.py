"""A scripted pick-and-place expert for LIBERO, driven by privileged object positions.

It emits the same 7-value OSC delta actions a learned policy does (position deltas scaled by the
controller's 5 cm per unit, a yaw that turns the fingers across a box's narrow side at 0.5 rad per unit,
gripper -1 open / +1 close), so a successful run checks the whole
adapter: action scaling, gripper sign, step accounting and success detection. It later generates
demonstrations. It handles tasks whose objects of interest are (object, container), as in libero_object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, Policy, PolicyRequirements, check_ranges
from qdepth_bench.policies.scripted_motion import half_turn

OSC_METRES_PER_UNIT = 0.05  # robosuite OSC_POSE output_max for position
OSC_RADIANS_PER_UNIT = 0.5  # and for rotation
OPEN, CLOSE = -1.0, 1.0


@dataclass
class ScriptedConfig:
    approach_height: float = 0.12  # above the object's centre before descending
    grasp_offset: float = 0.0  # grasp height relative to the object's centre
    min_grasp_z: float = 0.008  # never drive the fingers below this (floor)
    carry_z: float = 0.25  # travel height
    release_height: float = 0.10  # above the container's origin when opening
    carry_speed: float = 0.5  # action limit while holding the object, so tall ones do not swing
    gain: float = 0.8  # fraction of the remaining error commanded per step
    grasp_steps: int = 12
    release_steps: int = 10
    cameras: tuple[str, ...] = ("main",)

    def __post_init__(self) -> None:
        check_ranges(self, positive=("carry_speed", "gain"), non_negative=("grasp_steps", "release_steps"))


@dataclass
class _Episode:
    phase: str = "approach"
    phase_steps: int = 0


class ScriptedLiberoPolicy(Policy):
    """Approach, descend, grasp, lift, carry over the container, lower, release."""

    Config = ScriptedConfig
    uses_seed = False

    def __init__(self, config: ScriptedConfig, name: str = "scripted") -> None:
        super().__init__(config, name)
        self._episodes: dict[str, _Episode] = {}

    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements(cameras=tuple(self.config.cameras), chunk_size=1, action_dim=7, privileged=True)

    def reset(self, episode: EpisodeContext) -> None:
        self._episodes[episode.key] = _Episode()

    def act(self, batch: ObservationBatch) -> np.ndarray:
        if len(batch.privileged) != len(batch):
            raise UserError("the scripted expert needs privileged object positions, which this suite does not give.")
        return np.stack(
            [self._act_one(self._episodes[k], p)[None] for k, p in zip(batch.keys, batch.privileged, strict=True)]
        )

    def _move(
        self, eef: np.ndarray, target: np.ndarray, gripper: float, yaw: float = 0.0, limit: float = 1.0
    ) -> np.ndarray:
        delta = np.clip(self.config.gain * (target - eef) / OSC_METRES_PER_UNIT, -limit, limit)
        turn = np.clip(self.config.gain * yaw / OSC_RADIANS_PER_UNIT, -1.0, 1.0)
        return np.concatenate([delta, [0.0, 0.0, turn], [gripper]]).astype(np.float32)

    @staticmethod
    def _yaw_error(priv: dict, name: str) -> float:
        """Rotation about z that makes the fingers close across the object's narrow side (0 if round)."""
        axis = priv["grasp_axes"].get(name)
        if axis is None:
            return 0.0
        fingers = priv["finger_axis"][:2]
        error = np.arctan2(axis[1], axis[0]) - np.arctan2(fingers[1], fingers[0])
        return half_turn(error)

    def _act_one(self, state: _Episode, priv: dict) -> np.ndarray:
        names = priv["objects_of_interest"]
        if len(names) < 2:
            raise UserError(f"the scripted expert needs an (object, container) task; this one has {names}.")
        obj, container = (priv["positions"][n] for n in names[:2])
        eef = priv["eef_pos"]
        c = self.config
        state.phase_steps += 1
        if state.phase == "approach":
            target = obj + [0.0, 0.0, c.approach_height]
            yaw = self._yaw_error(priv, names[0])
            if np.linalg.norm((target - eef)[:2]) < 0.01 and abs(target[2] - eef[2]) < 0.02 and abs(yaw) < 0.05:
                self._next(state, "descend")
            return self._move(eef, target, OPEN, yaw)
        if state.phase == "descend":
            target = obj + [0.0, 0.0, c.grasp_offset]
            target[2] = max(target[2], c.min_grasp_z)
            if np.linalg.norm(target - eef) < 0.008 or state.phase_steps > 40:
                self._next(state, "grasp")
            return self._move(eef, target, OPEN, self._yaw_error(priv, names[0]))
        if state.phase == "grasp":
            if state.phase_steps >= c.grasp_steps:
                self._next(state, "lift")
            return self._move(eef, eef, CLOSE)
        if state.phase == "lift":
            target = np.array([eef[0], eef[1], c.carry_z])
            if eef[2] > c.carry_z - 0.03:
                self._next(state, "carry")
            return self._move(eef, target, CLOSE)
        if state.phase == "carry":
            target = np.array([container[0], container[1], c.carry_z])
            if np.linalg.norm((target - eef)[:2]) < 0.015:
                self._next(state, "lower")
            return self._move(eef, target, CLOSE, limit=c.carry_speed)
        if state.phase == "lower":
            target = np.array([container[0], container[1], container[2] + c.release_height])
            if abs(target[2] - eef[2]) < 0.02 or state.phase_steps > 30:
                self._next(state, "release")
            return self._move(eef, target, CLOSE, limit=c.carry_speed)
        if state.phase == "release":
            if state.phase_steps >= c.release_steps:
                self._next(state, "retreat")
            return self._move(eef, eef, OPEN)
        return self._move(eef, np.array([eef[0], eef[1], c.carry_z]), OPEN)

    @staticmethod
    def _next(state: _Episode, phase: str) -> None:
        state.phase, state.phase_steps = phase, 0
