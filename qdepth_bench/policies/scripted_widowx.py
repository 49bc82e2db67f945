"""A scripted pick-and-place expert for the SIMPLER WidowX tasks (privileged object positions).

It emits the same actions a Bridge policy does (base-frame translation deltas, roll/pitch/yaw deltas, gripper
> 0.5 = open), so it exercises the ManiSkill3 adapter end to end: above the source, down, close, up, over
the target, down to just above it, open.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, Policy, PolicyRequirements, check_ranges
from qdepth_bench.policies.scripted_motion import half_turn, step_toward


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

    def act(self, batch: ObservationBatch) -> np.ndarray:
        c = self.config
        actions = []
        for key, scene in zip(batch.keys, batch.privileged, strict=True):
            phase, count = self._phase[key]
            ee, source, target = scene["target_pose"], scene["source"], scene["target"]
            gripper, move, turn = 1.0, np.zeros(3), 0.0
            if phase <= 1:  # the gripper is symmetric: align with the object's yaw modulo pi
                wanted = half_turn(scene["source_yaw"])
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
                move, reached = step_toward(ee, goals[phase], c.step_m, 0.01)
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
