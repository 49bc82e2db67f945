"""The scripted Google-robot expert's decisions on observations made here (its episodes in SimplerEnv are in
test_simpler_env_backend.py): it steers by the proprio state, turns the fingers across a lying can, waits
for the sticky gripper, and for move near carries the object to beside the target and lets go."""

from __future__ import annotations

import numpy as np

from qdepth_bench.core.policy import EpisodeContext, ObservationBatch
from qdepth_bench.policies.scripted_google import CLOSE, HOLD, OPEN, yaw_to_grasp
from qdepth_bench.registry.policies import make_policy

#: the Google robot's end effector at reset in SimplerEnv (base frame; quaternion x, y, z, w)
EE_QUAT_XYZW = np.array([-0.604, 0.78, -0.032, 0.16])
UPRIGHT = np.array([0.7071, 0.7071, 0.0, 0.0])  # wxyz: the can's long (local y) axis turned to vertical


def observation(ee: np.ndarray, source: np.ndarray, target: np.ndarray | None, quat=UPRIGHT) -> ObservationBatch:
    scene = {"source": source, "source_quat": quat}
    if target is not None:
        scene["target"] = target
    state = np.concatenate([ee, EE_QUAT_XYZW, [0.0]])[None].astype(np.float32)
    return ObservationBatch(["e"], {"main": np.zeros((1, 8, 8, 3), np.uint8)}, state, ["x"], privileged=[scene])


def test_a_lying_can_is_grasped_across_and_an_upright_one_needs_no_turn():
    assert yaw_to_grasp(EE_QUAT_XYZW, UPRIGHT) == 0.0
    along_x = np.array([0.7071, 0.0, 0.0, -0.7071])  # long axis turned onto the base x axis
    along_y = np.array([1.0, 0.0, 0.0, 0.0])
    assert abs(yaw_to_grasp(EE_QUAT_XYZW, along_x) - yaw_to_grasp(EE_QUAT_XYZW, along_y)) % np.pi > 1.4


def test_move_near_carries_the_object_beside_the_target_and_opens():
    policy = make_policy("scripted-google")
    policy.reset(EpisodeContext("e", 0, None))  # type: ignore[arg-type]
    ee, source, target = np.array([0.44, -0.22, 0.96]), np.array([0.6, 0.0, 0.84]), np.array([0.6, 0.3, 0.84])
    grippers, held = [], False
    for _ in range(120):
        action = policy.act(observation(ee, source, target))[0, 0]
        assert np.all(np.abs(action[:3]) <= 0.04 + 1e-6)
        grippers.append(float(action[6]))
        ee = ee + action[:3]
        held = (held or float(action[6]) == CLOSE) and float(action[6]) != OPEN
        if held:  # grasped: the object moves with the hand; released, it drops to the table
            source = ee.copy()
        elif OPEN in grippers:
            source = np.array([source[0], source[1], 0.84])
    assert CLOSE in grippers and OPEN in grippers and grippers.index(CLOSE) < grippers.index(OPEN)
    assert set(grippers) <= {CLOSE, HOLD, OPEN}
    assert np.linalg.norm(source[:2] - target[:2]) < 0.12 and source[2] == 0.84  # put down beside it
