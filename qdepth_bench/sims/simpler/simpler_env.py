"""SIMPLER on the official SimplerEnv package (ManiSkill2 real2sim, SAPIEN 2.2.2): both robots, every task.

SimplerEnv is not on PyPI; `qdepth-bench doctor` prints how to install it. Each grid cell builds the env the
way SimplerEnv's own evaluator does (robot, 3 / 5 Hz control, 513 / 500 Hz sim, scene, URDF variant,
real-image overlay on the policy camera, ray tracing for the drawer tasks) and resets it with the cell's
robot pose and object position or episode id. Policy actions pass through the robot adapters: roll/pitch/
yaw -> axis-angle, the WidowX gripper threshold or the Google robot's sticky gripper. Success is the env's
`success` at the last step; Bridge tasks also record grasp (partial) success.

On CPU, SAPIEN 2.2.2 asks lavapipe for a Vulkan extension it lacks on kernels without udmabuf, and the
drawer tasks ray trace (about 50 s a step): this backend is for GPU machines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.imaging import resize_frame
from qdepth_bench.core.policy import ObservationBatch, PolicyRequirements, TaskInfo
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.core.sim import Env, StepResult
from qdepth_bench.sims.simpler import SIMPLER_ENV
from qdepth_bench.sims.simpler.adapters import (
    StickyGripper,
    bridge_proprio,
    google_proprio,
    robot_base_quat,
    rpy_to_axis_angle,
    widowx_gripper,
)
from qdepth_bench.sims.simpler.base import SimplerBackend, reset_seed, unobserved

#: SimplerEnv's controller per robot (simpler_env/utils/env/env_builder.py)
CONTROL_MODES = {
    "google_robot_static": "arm_pd_ee_delta_pose_align_interpolate_by_planner_gripper_pd_joint_target_delta_pos"
    "_interpolate_by_planner",
    "widowx": "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos",
}


def overlay_dir() -> Path:
    """Where SimplerEnv keeps its real-image overlays: `SIMPLER_OVERLAY_DIR`, else beside its ManiSkill2 package."""
    configured = os.environ.get("SIMPLER_OVERLAY_DIR")
    if configured:
        return Path(configured)
    import mani_skill2_real2sim

    return Path(mani_skill2_real2sim.__file__).resolve().parents[1] / "data" / "real_inpainting"


def build_kwargs(
    protocol: dict[str, Any], task: dict[str, Any], cell: dict[str, Any], overlays: Path, max_steps: int
) -> tuple[str, dict[str, Any]]:
    """The env id and `gym.make` keyword arguments of one grid cell, as SimplerEnv's evaluator builds them."""
    sim = task.get("simpler_env", {})
    env_id = cell.get("env_id") or task["env_ids"]["simpler_env"]
    if cell["mode"] == "prepackaged":
        return env_id, {"obs_mode": "rgbd", "prepackaged_config": True, **sim.get("kwargs", {})}
    robot = sim.get("robot", protocol["robot"])
    kwargs: dict[str, Any] = {"shader_dir": "rt"} if task.get("ray_tracing") else {}
    kwargs.update(sim.get("kwargs", {}))
    kwargs.update(sim.get("orientation_kwargs", {}).get(cell.get("orientation"), {}))
    urdf = cell.get("urdf", "default")
    if robot.startswith("google"):
        kwargs["urdf_version"] = None if urdf == "default" else urdf
    overlay = cell.get("overlay") or task.get("overlay")
    kwargs.update(
        obs_mode="rgbd",
        robot=robot,
        sim_freq=int(protocol["sim_hz"]),
        control_mode=CONTROL_MODES["widowx" if "widowx" in robot else robot],
        control_freq=int(protocol["control_hz"]),
        max_episode_steps=max_steps,
        scene_name=sim["scene"],
        camera_cfgs={"add_segmentation": True},
        rgb_overlay_path=str(overlays / overlay) if overlay else None,
        rgb_overlay_cameras=[protocol["cameras"]["main"]],
    )
    return env_id, kwargs


def reset_options(task: dict[str, Any], cell: dict[str, Any]) -> dict[str, Any]:
    """Robot pose and object placement of one grid cell (SimplerEnv's `robot_init_options` / `obj_init_options`)."""
    if cell["mode"] == "prepackaged":
        return {}
    x, y, yaw = cell.get("robot_pose") or task.get("robot_pose") or [*task["robot_xy"], 0.0]
    options: dict[str, Any] = {
        "robot_init_options": {"init_xy": np.array([x, y]), "init_rot_quat": robot_base_quat(yaw)}
    }
    if "episode_id" in cell:
        options["obj_init_options"] = {"episode_id": int(cell["episode_id"])}
    else:
        ox = cell.get("object_x", cell.get("apple_x", 0.0))
        oy = cell.get("object_y", cell.get("apple_y", 0.0))
        options["obj_init_options"] = {"init_xy": np.array([ox, oy])}
    return options


class SimplerEnvEnv(Env):
    def __init__(
        self, spec: SuiteSpec, task: TaskInfo, task_data: dict[str, Any], requirements: PolicyRequirements
    ) -> None:
        self.task, self.task_data, self.protocol = task, task_data, spec.protocol
        self.max_steps = min(int(task_data["max_steps"]), int(spec.protocol["max_steps"]))
        self.image_size = requirements.image_size
        self.camera = spec.protocol["cameras"]["main"]
        self.google = spec.protocol["robot"].startswith("google")
        self.sticky = StickyGripper(15)
        self.sim_env: Any = None
        self._built: tuple[str, str] | None = None
        self._key, self.steps = "", 0

    def _env_for(self, cell: dict[str, Any]) -> Any:
        """Build (or keep) the env of this cell: URDF, overlay, env id and orientation are build arguments."""
        import gymnasium as gym
        import mani_skill2_real2sim.envs  # noqa: F401 - registers the env ids

        env_id, kwargs = build_kwargs(self.protocol, self.task_data, cell, overlay_dir(), self.max_steps)
        identity = (env_id, repr(sorted(kwargs.items())))
        if identity != self._built:
            if self.sim_env is not None:
                self.sim_env.close()
            self.sim_env = gym.make(env_id, **kwargs)
            self._built = identity
        return self.sim_env

    def _observation(self, obs: dict[str, Any]) -> ObservationBatch:
        rgb = np.asarray(obs["image"][self.camera]["rgb"], dtype=np.uint8)
        image = resize_frame(rgb, self.image_size, str(self.protocol["image_resize"]))
        u = self.sim_env.unwrapped
        tcp = u.agent.robot.pose.inv() * u.tcp.pose  # end effector in the robot base frame
        closedness = float(u.agent.get_gripper_closedness())
        state = (
            google_proprio(tcp.p, tcp.q, closedness) if self.google else bridge_proprio(tcp.p, tcp.q, 1.0 - closedness)
        )
        self.last_observation = ObservationBatch(
            [self._key], {"main": image[None]}, state[None], [self.task.instruction]
        )
        return self.last_observation

    def reset(self, episode: EpisodeSpec) -> ObservationBatch:
        self._key, self.steps = episode.key, 0
        self.sticky.reset()
        env = self._env_for(episode.variant)
        obs, _ = env.reset(seed=reset_seed(episode), options=reset_options(self.task_data, episode.variant))
        return self._observation(obs)

    def step(self, action: np.ndarray, observe: bool = True) -> StepResult:
        action = np.asarray(action, dtype=np.float64)
        gripper = self.sticky(float(action[6])) if self.google else widowx_gripper(float(action[6]))
        env_action = np.concatenate([action[:3], rpy_to_axis_angle(action[3:6]), [gripper]])
        observe = observe or self.render_every_step
        with unobserved(self.sim_env, not observe):
            obs, _, _, _, info = self.sim_env.step(env_action)
        self.steps += 1
        final = self.steps >= self.max_steps
        stats = info.get("episode_stats", {})
        details: dict[str, Any] = {}
        if "is_src_obj_grasped" in stats:
            details["partial_success"] = float(bool(stats["is_src_obj_grasped"]))
        if final:  # success is read at the last step, never earlier
            details.update({f"stat_{k}": float(bool(v)) for k, v in stats.items() if isinstance(v, (bool, np.bool_))})
        observation = self._observation(obs) if observe else None
        return StepResult(observation, final, bool(final and info["success"]), details)


class SimplerEnvBackend(SimplerBackend):
    """Every SIMPLER task through SimplerEnv; the reference backend of the paper's Tables 3-4."""

    name = "simpler_env"

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        try:
            import mani_skill2_real2sim  # noqa: F401
            import simpler_env  # noqa: F401
        except ImportError:
            raise UserError(f"SimplerEnv is not installed: {SIMPLER_ENV.install_hint}.") from None

    def make_env(self, task_id: int, requirements: PolicyRequirements) -> SimplerEnvEnv:
        try:
            return SimplerEnvEnv(self.spec, self.task_info(task_id), self.tasks[task_id], requirements)
        except Exception as exc:  # a simulator that cannot be built is a setup problem
            raise UserError(
                f"cannot build SimplerEnv env for {self.spec.name} task {task_id} "
                f"({type(exc).__name__}: {exc}); run `qdepth-bench doctor`."
            ) from exc
