"""A scripted expert for the SIMPLER Google-robot tasks (pick coke can, move near), on privileged poses.

It emits what a Fractal (RT-1 data) policy emits: base-frame translation deltas, roll/pitch/yaw deltas and
a gripper value in [0, 1] that the backend turns into the Google robot's sticky command (0 closes, 1 opens,
0.5 leaves it). So it checks the controller, the sticky gripper and the proprio conventions end to end:
the end effector it steers by is read from the proprio state (position, then quaternion x, y, z, w),
not from the privileged poses. Phases: above the object, down, close (and wait for the sticky command to
finish), lift; for move near, then over a point beside the target, down, open.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, Policy, PolicyRequirements, check_ranges
from qdepth_bench.core.rotations import quat_wxyz_to_matrix
from qdepth_bench.policies.scripted_motion import half_turn, step_toward

CLOSE, OPEN, HOLD = 0.0, 1.0, 0.5


def yaw_to_grasp(ee_quat_xyzw: np.ndarray, object_quat_wxyz: np.ndarray, long_axis_index: int = 1) -> float:
    """The yaw turn that makes the fingers close across a lying object's long axis (its local axis
    `long_axis_index`: y for SimplerEnv's can models); 0 for an upright one. The fingers close along the end
    effector's y axis."""
    long_axis = quat_wxyz_to_matrix(object_quat_wxyz)[:, long_axis_index]
    if abs(long_axis[2]) > 0.7:
        return 0.0
    closing = quat_wxyz_to_matrix(np.roll(np.asarray(ee_quat_xyzw), 1))[:, 1]
    wanted = np.arctan2(long_axis[1], long_axis[0]) + np.pi / 2
    return half_turn(wanted - np.arctan2(closing[1], closing[0]))


@dataclass
class ScriptedGoogleConfig:
    step_m: float = 0.04  # largest translation per action (metres)
    hover_m: float = 0.08  # approach height above the object's origin
    grasp_dz_m: float = 0.0  # grasp height relative to the object's origin
    lift_m: float = 0.12
    near_m: float = 0.08  # move near: where beside the target the object is put down (towards the robot)
    close_steps: int = 6  # steps the gripper needs to close (the sticky command lasts 15)
    long_axis: int = 1  # the objects' local axis that runs along them (y for SimplerEnv's cans and bottles)

    def __post_init__(self) -> None:
        check_ranges(self, positive=("step_m", "hover_m", "lift_m", "near_m"), non_negative=("close_steps",))


class ScriptedGooglePolicy(Policy):
    Config = ScriptedGoogleConfig
    uses_seed = False

    def __init__(self, config: ScriptedGoogleConfig, name: str = "scripted-google") -> None:
        super().__init__(config, name)
        #: per episode: phase and steps in it, the height the object rested at, and the point the lift goes to
        self._phase: dict[str, tuple[int, int]] = {}
        self._rest_z: dict[str, float] = {}
        self._lift_to: dict[str, np.ndarray] = {}

    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements(
            cameras=("main",),
            chunk_size=1,
            action_dim=7,
            privileged=True,
            state_layouts=("google_eef_pos_quat_xyzw_closedness",),
        )

    def reset(self, episode: EpisodeContext) -> None:
        self._phase[episode.key] = (0, 0)

    def act(self, batch: ObservationBatch) -> np.ndarray:
        c = self.config
        actions = []
        for key, state, scene in zip(batch.keys, batch.state, batch.privileged, strict=True):
            ee = np.asarray(state[:3], dtype=np.float64)  # proprio: the end effector in the base frame
            source = scene["source"]
            target = scene.get("target")
            phase, count = self._phase[key]
            if phase <= 1:
                self._rest_z[key] = float(source[2])
            rest_z = self._rest_z[key]
            move, gripper, turn = np.zeros(3), HOLD, 0.0
            if phase <= 1:  # align the fingers on the way down, steering by the proprio quaternion
                turn = float(np.clip(yaw_to_grasp(state[3:7], scene["source_quat"], c.long_axis), -0.2, 0.2))
            if target is None:
                place = None
            else:  # beside the target, on the robot's side of it
                toward_robot = -target[:2] / max(float(np.linalg.norm(target[:2])), 1e-6)
                place = np.concatenate([target[:2] + c.near_m * toward_robot, [rest_z]])
            goals = {
                0: source + [0, 0, c.hover_m],
                1: source + [0, 0, c.grasp_dz_m],
                3: ee * [1, 1, 0] + [0, 0, rest_z + c.lift_m],
                4: None if place is None else place + [0, 0, c.lift_m],
                5: None if place is None else place + [0, 0, c.grasp_dz_m + 0.02],
            }
            if phase in (0, 1, 3, 4, 5):
                if phase == 3 and count == 0:
                    self._lift_to[key] = goals[3]
                goal = self._lift_to[key] if phase == 3 else goals[phase]
                move, reached = step_toward(ee, goal, c.step_m, 0.015)
                count += 1
                if (reached and abs(turn) < 0.02) or count > 25:
                    phase, count = (phase + 1, 0) if not (phase == 3 and place is None) else (7, 0)
            elif phase == 2:  # close (the sticky command then holds for its 15 steps) while the arm waits
                gripper = CLOSE
                count += 1
                if count >= c.close_steps:
                    phase, count = 3, 0
            elif phase == 6:  # open over the place
                gripper, phase, count = OPEN, 7, 0
            self._phase[key] = (phase, count)
            actions.append(np.concatenate([move, [0.0, 0.0, turn], [gripper]]))
        return np.asarray(actions, dtype=np.float32)[:, None, :]
