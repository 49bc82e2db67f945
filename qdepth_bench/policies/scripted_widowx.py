"""A scripted pick-and-place expert for the SIMPLER WidowX tasks (privileged object positions).

It emits the same actions a Bridge policy does (base-frame translation deltas, roll/pitch/yaw deltas, gripper
> 0.5 = open), so it exercises the ManiSkill3 adapter end to end: above the source, down, close, up, over
the target, down to just above it, open.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, Policy, PolicyRequirements, check_ranges


@dataclass
class ScriptedWidowXConfig:
    chunk_size: int = 1
    step_m: float = 0.02  # largest translation per action (metres)
    hover_m: float = 0.07  # approach height above an object
    grasp_dz_m: float = 0.0  # grasp height relative to the object's origin
    release_dz_m: float = 0.05
    close_steps: int = 4
    open_steps: int = 3

    def __post_init__(self) -> None:
        check_ranges(self, positive=("chunk_size", "step_m"), non_negative=("close_steps", "open_steps"))


class ScriptedWidowXPolicy(Policy):
    Config = ScriptedWidowXConfig
    uses_seed = False

    def __init__(self, config: ScriptedWidowXConfig, name: str = "scripted-widowx") -> None:
        super().__init__(config, name)
        #: per episode: phase, steps in it, where the object was grasped, yaw turned so far
        self._phase: dict[str, tuple[int, int]] = {}
        self._grasped_at: dict[str, np.ndarray] = {}
        self._turned: dict[str, float] = {}

    @property
    def requirements(self) -> PolicyRequirements:
        return PolicyRequirements(cameras=("main",), chunk_size=1, action_dim=7, privileged=True)

    def reset(self, episode: EpisodeContext) -> None:
        self._phase[episode.key] = (0, 0)
        self._turned[episode.key] = 0.0
        self._grasped_at.pop(episode.key, None)

    def _toward(self, ee: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, bool]:
        delta = goal - ee
        norm = float(np.linalg.norm(delta))
        step = delta if norm <= self.config.step_m else delta * self.config.step_m / norm
        return step, norm < 0.01

    def act(self, batch: ObservationBatch) -> np.ndarray:
        c = self.config
        actions = []
        for key, scene in zip(batch.keys, batch.privileged, strict=True):
            phase, count = self._phase[key]
            ee, source, target = scene["target_pose"], scene["source"], scene["target"]
            gripper, move, turn = 1.0, np.zeros(3), 0.0
            if phase <= 1:  # the gripper is symmetric: align with the object's yaw modulo pi
                wanted = (scene["source_yaw"] + np.pi / 2) % np.pi - np.pi / 2
                turn = float(np.clip(wanted - self._turned[key], -0.3, 0.3))
                self._turned[key] += turn
            lifted_from = self._grasped_at.get(key, source)
            goals = [
                source + [0, 0, c.hover_m],
                source + [0, 0, c.grasp_dz_m],
                None,
                lifted_from + [0, 0, c.hover_m + 0.03],
                target + [0, 0, c.hover_m + 0.03],
                target + [0, 0, c.release_dz_m],
                None,
            ]
            if phase in (0, 1, 3, 4, 5):
                move, reached = self._toward(ee, goals[phase])
                gripper = 1.0 if phase in (0, 1) else 0.0
                if reached and abs(turn) < 1e-3:
                    phase, count = phase + 1, 0
            elif phase == 2:  # close, then remember where the lift starts
                gripper, count = 0.0, count + 1
                if count >= c.close_steps:
                    phase, count = 3, 0
                    self._grasped_at[key] = source.copy()
            else:  # release and hold
                gripper = 1.0
            self._phase[key] = (phase, count)
            actions.append(np.concatenate([move, [0.0, 0.0, turn], [gripper]]))
        return np.asarray(actions, dtype=np.float32)[:, None, :]
