"""SIMPLER on the official SimplerEnv package (ManiSkill2 real2sim, SAPIEN 2.2.2): both robots, every task.

SimplerEnv is not on PyPI and cannot share the main environment (numpy < 2, SAPIEN 2): setup builds it its
own (`environment.py`), where the engine starts this backend's env workers. Each grid cell builds the env
the way SimplerEnv's own evaluator does (robot, 3 / 5 Hz control, 513 / 500 Hz sim, scene, URDF variant,
real-image overlay on the policy camera, ray tracing for the drawer tasks) and every episode resets with
`reconfigure`, which rebuilds the scene: an episode then depends only on its cell and seed, never on the
episodes the worker ran before (a reused scene drifts by millimetres). Policy actions pass through the
robot adapters: roll/pitch/yaw -> axis-angle, the WidowX gripper threshold or the Google robot's sticky
gripper. Success is the env's `success` at the last step; Bridge tasks also record grasp (partial) success.

A scene file that is missing (stage, object mesh, overlay) stops the run with one line before the episode
starts; with `--stand-ins` a missing stage becomes SimplerEnv's own box tabletop scene and the episode is
flagged `stand_in_table`. On CPU the drawer tasks ray trace (minutes a step).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.imaging import resize_frame
from qdepth_bench.core.policy import ObservationBatch, PolicyRequirements, TaskInfo
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.core.rotations import matrix_to_rpy, quat_wxyz_to_matrix, rpy_to_axis_angle
from qdepth_bench.core.sim import Env, StepResult
from qdepth_bench.sims.simpler import SIMPLER_ENV
from qdepth_bench.sims.simpler.adapters import (
    StickyGripper,
    bridge_proprio,
    google_proprio,
    robot_base_quat,
    widowx_gripper,
)
from qdepth_bench.sims.simpler.base import MissingAsset, SimplerBackend, reset_seed, unobserved
from qdepth_bench.sims.simpler.environment import worker_environment

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


#: how a missing file is fixed: the archive in ../shared/vendor lacks these meshes
_ASSET_FIX = (
    "install the complete copy from GitHub: rm -rf .venv-simplerenv/src && SIMPLERENV_SOURCE=github bash "
    "scripts/setup_simplerenv.sh"
)
_DATA = "SimplerEnv's ManiSkill2_real2sim data"


def _stage_path(env: Any) -> Path | None:
    """The stage mesh SimplerEnv's `_load_arena_helper` will load (None for its dummy scenes)."""
    name = env.scene_name
    if name is None:
        name = "google_pick_coke_can_1_v4" if "google_robot_static" in env.robot_uid else "bridge_table_1_v1"
    elif "dummy" in name:
        return None
    return Path(env.scene_root) / "stages" / f"{name}.glb"


def _install_asset_checks() -> None:
    """Make SimplerEnv's scene loading refuse missing files (it would print an error and build the scene
    without them: no table, invisible objects) and stand in for a missing stage when the run allows it."""
    from mani_skill2_real2sim.envs.custom_scenes.base_env import CustomOtherObjectsInSceneEnv, CustomSceneEnv

    if getattr(CustomSceneEnv, "qdepth_checked", False):
        return
    load_arena = CustomSceneEnv._load_arena_helper
    build_actor = CustomOtherObjectsInSceneEnv._build_actor_helper
    signature = inspect.signature(build_actor)

    def checked_load_arena(self: Any, *args: Any, **kwargs: Any) -> None:
        stage = _stage_path(self)
        self.qdepth_missing_stage = ""
        if stage is None or stage.is_file():
            return load_arena(self, *args, **kwargs)
        if not CustomSceneEnv.qdepth_stand_ins:
            raise MissingAsset(str(stage), _DATA, _ASSET_FIX, stage=True)
        self.qdepth_missing_stage, scene = str(stage), self.scene_name
        self.scene_name = "dummy_tabletop"  # SimplerEnv's own box table and ground
        try:
            return load_arena(self, *args, **kwargs)
        finally:
            self.scene_name = scene

    def checked_build_actor(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        folder = Path(bound.arguments["root_dir"]) / "models" / bound.arguments["model_id"]
        if not (folder / "collision.obj").is_file():
            raise MissingAsset(str(folder / "collision.obj"), _DATA, _ASSET_FIX)
        if not any((folder / f"textured.{ext}").is_file() for ext in ("obj", "dae", "glb")):
            raise MissingAsset(str(folder / "textured.{obj,dae,glb}"), _DATA, _ASSET_FIX)
        return build_actor(*args, **kwargs)

    CustomSceneEnv._load_arena_helper = checked_load_arena
    CustomOtherObjectsInSceneEnv._build_actor_helper = staticmethod(checked_build_actor)
    CustomSceneEnv.qdepth_stand_ins = False
    CustomSceneEnv.qdepth_checked = True


@contextmanager
def _images_unconverted(sim_env: Any, skip: bool) -> Iterator[None]:
    """While `skip`, SimplerEnv's image wrapper (float Color -> uint8 rgb, a pure function of the observation)
    passes the empty observation of an unrendered step through instead of failing on its missing images."""
    wrapper = sim_env
    while skip and wrapper is not None and type(wrapper).__name__ != "RGBDObservationWrapper":
        wrapper = getattr(wrapper, "env", None)
    if wrapper is None or not skip:
        yield
        return
    wrapper.observation = lambda observation: observation
    try:
        yield
    finally:
        del wrapper.observation


class SimplerEnvEnv(Env):
    def __init__(
        self, spec: SuiteSpec, task: TaskInfo, task_data: dict[str, Any], requirements: PolicyRequirements
    ) -> None:
        self.task, self.task_data, self.protocol = task, task_data, spec.protocol
        self.max_steps = min(int(task_data["max_steps"]), int(spec.protocol["max_steps"]))
        self.image_size = requirements.image_size
        self.camera = spec.protocol["cameras"]["main"]
        self.google = spec.protocol["robot"].startswith("google")
        self.privileged = requirements.privileged
        self.stand_ins = bool(spec.protocol.get("stand_ins"))
        self.stand_in = False
        self.sticky = StickyGripper(15)
        self.sim_env: Any = None
        self._built: tuple[str, str] | None = None
        self._key, self.steps = "", 0

    def _env_for(self, cell: dict[str, Any]) -> Any:
        """Build (or keep) the env of this cell: URDF, overlay, env id and orientation are build arguments."""
        import gymnasium as gym
        import mani_skill2_real2sim.envs  # noqa: F401 - registers the env ids
        from mani_skill2_real2sim.envs.custom_scenes.base_env import CustomSceneEnv

        _install_asset_checks()
        CustomSceneEnv.qdepth_stand_ins = self.stand_ins
        env_id, kwargs = build_kwargs(self.protocol, self.task_data, cell, overlay_dir(), self.max_steps)
        overlay = kwargs.get("rgb_overlay_path")
        if overlay and not Path(overlay).is_file():
            raise MissingAsset(overlay, _DATA, _ASSET_FIX)
        identity = (env_id, repr(sorted(kwargs.items())))
        if identity != self._built:
            if self.sim_env is not None:
                self.sim_env.close()
                self.sim_env, self._built = None, None
            self.sim_env = gym.make(env_id, **kwargs)
            self._built = identity
        return self.sim_env

    def renderer(self) -> str:
        """SAPIEN's version and, where the project's Vulkan layer runs, the device and what it dropped."""
        import sapien

        from qdepth_bench.sims.simpler import vulkan_layer

        seen = vulkan_layer.report()
        if seen is None:
            return f"SAPIEN {sapien.__version__} Vulkan"
        device, dropped = seen
        layer = f"layer {vulkan_layer.LAYER_NAME} dropped {dropped or 'nothing'}"
        return f"SAPIEN {sapien.__version__} Vulkan {device} | {layer}"

    def _observation(self, obs: dict[str, Any]) -> ObservationBatch:
        rgb = np.asarray(obs["image"][self.camera]["rgb"], dtype=np.uint8)
        image = resize_frame(rgb, self.image_size, str(self.protocol["image_resize"]))
        u = self.sim_env.unwrapped
        tcp = u.agent.robot.pose.inv() * u.tcp.pose  # end effector in the robot base frame
        closedness = float(u.agent.get_gripper_closedness())
        state = (
            google_proprio(tcp.p, tcp.q, closedness) if self.google else bridge_proprio(tcp.p, tcp.q, 1.0 - closedness)
        )
        privileged = [self._privileged(tcp)] if self.privileged else []
        self.last_observation = ObservationBatch(
            [self._key], {"main": image[None]}, state[None], [self.task.instruction], privileged=privileged
        )
        return self.last_observation

    def _privileged(self, tcp: Any) -> dict[str, Any]:
        """Object poses in the robot base frame, for scripted experts only: the task's source object (the one
        to grasp) and, where the task has one, its target; the end effector and the controller's target."""
        u = self.sim_env.unwrapped
        base_inverse = u.agent.robot.pose.inv()
        source = getattr(u, "episode_source_obj", None) or u.obj
        at_base = base_inverse * source.pose
        scene: dict[str, Any] = {
            "source": np.asarray(at_base.p, dtype=np.float64),
            "source_quat": np.asarray(at_base.q, dtype=np.float64),  # wxyz
            "source_yaw": float(matrix_to_rpy(quat_wxyz_to_matrix(np.asarray(at_base.q)))[2]),
            "ee": np.asarray(tcp.p, dtype=np.float64),
            "ee_quat": np.asarray(tcp.q, dtype=np.float64),
            "target_pose": np.asarray(u.agent.controller.controllers["arm"]._target_pose.p, dtype=np.float64),
        }
        target = getattr(u, "episode_target_obj", None)
        if target is not None:
            scene["target"] = np.asarray((base_inverse * target.pose).p, dtype=np.float64)
        return scene

    def reset(self, episode: EpisodeSpec) -> ObservationBatch:
        self._key, self.steps = episode.key, 0
        self.sticky.reset()
        # reconfigure: a scene rebuilt for every episode, as a fresh env would be
        options = {**reset_options(self.task_data, episode.variant), "reconfigure": True}
        try:
            env = self._env_for(episode.variant)
            obs, _ = env.reset(seed=reset_seed(episode), options=options)
        except MissingAsset as exc:
            raise UserError(f"{self.task.suite} task {self.task.task_id} ({self.task.task_name}): {exc}") from None
        self.stand_in = bool(getattr(env.unwrapped, "qdepth_missing_stage", ""))
        return self._observation(obs)

    def step(self, action: np.ndarray, observe: bool = True) -> StepResult:
        action = np.asarray(action, dtype=np.float64)
        gripper = self.sticky(float(action[6])) if self.google else widowx_gripper(float(action[6]))
        env_action = np.concatenate([action[:3], rpy_to_axis_angle(action[3:6]), [gripper]])
        observe = observe or self.render_every_step
        with unobserved(self.sim_env, not observe), _images_unconverted(self.sim_env, not observe):
            obs, _, _, _, info = self.sim_env.step(env_action)
        self.steps += 1
        final = self.steps >= self.max_steps
        stats = info.get("episode_stats", {})
        details: dict[str, Any] = {"stand_in_table": self.stand_in}
        if "is_src_obj_grasped" in stats:
            details["partial_success"] = float(bool(stats["is_src_obj_grasped"]))
        if final:  # success is read at the last step, never earlier
            details.update({f"stat_{k}": float(bool(v)) for k, v in stats.items() if isinstance(v, (bool, np.bool_))})
        observation = self._observation(obs) if observe else None
        return StepResult(observation, final, bool(final and info["success"]), details)


class SimplerEnvBackend(SimplerBackend):
    """Every SIMPLER task through SimplerEnv; the reference backend of the paper's Tables 3-4."""

    name = "simpler_env"
    serves_privileged = True

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        worker_environment()  # one line naming the setup command when SimplerEnv is nowhere

    def make_env(self, task_id: int, requirements: PolicyRequirements) -> SimplerEnvEnv:
        try:
            import mani_skill2_real2sim  # noqa: F401
            import simpler_env  # noqa: F401
        except ImportError as exc:
            raise UserError(f"SimplerEnv does not import here ({exc}): {SIMPLER_ENV.install_hint}.") from None
        return SimplerEnvEnv(self.spec, self.task_info(task_id), self.tasks[task_id], requirements)
