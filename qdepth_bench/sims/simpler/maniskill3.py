"""SIMPLER WidowX (Bridge) tasks on ManiSkill3 (`mani-skill` 3.0.1, SAPIEN 3), CPU or GPU.

The policy's actions mean what they mean in SimplerEnv (`simpler_adapters.maniskill3_arm_action`), the
observation is the 3rd-view camera resized to 224 px with the Bridge proprio, success is read at the final
step, and besides ManiSkill3's own success the env reports SimplerEnv's rule (centres of mass; the object
may touch only the target and the robot) computed from ManiSkill3's state.

Assets come from `MS_ASSET_DIR`, else `../shared/assets/maniskill` beside the checkout. When the table
"stage" mesh is missing (it is not redistributable) the run stops with one line naming it, unless the run
asked for stand-ins (`--stand-ins`): then a box table with its top at the scene's table height replaces it
and every episode is flagged `stand_in_table`: those runs are not the published protocol and tables leave
them out unless asked.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.imaging import resize_bilinear, resize_frame
from qdepth_bench.core.paths import shared_dir
from qdepth_bench.core.policy import ObservationBatch, PolicyRequirements, TaskInfo
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.core.rotations import matrix_to_rpy, quat_wxyz_to_matrix, rpy_to_axis_angle
from qdepth_bench.core.sim import Env, StepResult
from qdepth_bench.sims.simpler.adapters import bridge_proprio, google_proprio, maniskill3_arm_action, widowx_gripper
from qdepth_bench.sims.simpler.base import MissingAsset, SimplerBackend, reset_seed, unobserved

#: height of the Bridge scene's table top (the plate rests at 0.8695 with a ~5 mm half height)
TABLE_TOP_Z = 0.865


def asset_dir() -> Path | None:
    configured = os.environ.get("MS_ASSET_DIR")
    if configured:
        return Path(configured)
    shared = shared_dir()
    return shared / "assets" / "maniskill" if shared and (shared / "assets" / "maniskill").is_dir() else None


def bridge_asset_dir() -> Path | None:
    """`asset_dir()` when it holds the Bridge task assets, else None."""
    assets = asset_dir()
    if assets is None or not (assets / "data" / "tasks" / "bridge_v2_real2sim_dataset").is_dir():
        return None
    return assets


class _StandInStage:
    """Wraps the actor builder of the Bridge "arena": if the stage mesh file is missing, build a box table."""

    def __init__(self, builder: Any) -> None:
        object.__setattr__(self, "_builder", builder)
        object.__setattr__(self, "missing", "")

    def add_nonconvex_collision_from_file(self, filename: str, *args: Any, **kwargs: Any) -> Any:
        if Path(filename).exists():
            return self._builder.add_nonconvex_collision_from_file(filename, *args, **kwargs)
        object.__setattr__(self, "missing", str(filename))
        return None

    def add_visual_from_file(self, filename: str, *args: Any, **kwargs: Any) -> Any:
        if Path(filename).exists():
            return self._builder.add_visual_from_file(filename, *args, **kwargs)
        return None

    def build_static(self, name: str) -> Any:
        if self.missing:
            import sapien

            origin = np.asarray(self._builder.initial_pose.p)
            centre = sapien.Pose(np.array([-0.1, 0.1, TABLE_TOP_Z / 2]) - origin)
            half = [0.7, 0.7, TABLE_TOP_Z / 2]
            self._builder.add_box_collision(pose=centre, half_size=half)
            self._builder.add_box_visual(
                pose=centre, half_size=half, material=sapien.render.RenderMaterial(base_color=[0.55, 0.47, 0.40, 1.0])
            )
        return self._builder.build_static(name=name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._builder, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._builder, name, value)


def _install_stand_in(env_class: Any) -> None:
    """Route the first actor builder of `_load_scene` (the arena) through `_StandInStage`, once per class."""
    if getattr(env_class, "_qdepth_stand_in", False):
        return
    original = env_class._load_scene

    def load_scene(self: Any, options: dict) -> None:
        create = self.scene.create_actor_builder
        wrapped: list[_StandInStage] = []

        def first_builder_wrapped() -> Any:
            builder = create()
            if not wrapped:
                wrapped.append(_StandInStage(builder))
                return wrapped[0]
            return builder

        self.scene.create_actor_builder = first_builder_wrapped
        try:
            original(self, options)
        finally:
            self.scene.create_actor_builder = create
        #: the stage mesh that was missing and stood in for ("" when the real one was loaded)
        self.qdepth_missing_stage = wrapped[0].missing if wrapped else ""

    env_class._load_scene = load_scene
    env_class._qdepth_stand_in = True


class ManiSkill3Env(Env):
    def __init__(
        self,
        spec: SuiteSpec,
        task: TaskInfo,
        task_data: dict[str, Any],
        requirements: PolicyRequirements,
        sim_backend: str,
        render_backend: str,
    ) -> None:
        import gymnasium as gym
        from mani_skill.envs.tasks.digital_twins.bridge_dataset_eval.base_env import BaseBridgeEnv

        _install_stand_in(BaseBridgeEnv)
        self.task, self.spec, self.protocol = task, spec, spec.protocol
        # the task's own limit, or a smaller protocol override (--max-steps) for short test runs
        self.max_steps = min(int(task_data["max_steps"]), int(spec.protocol["max_steps"]))
        self.image_size = requirements.image_size
        self.privileged = requirements.privileged
        self.camera = spec.protocol["cameras"]["main"]
        self.depth = requirements.depth
        self.sim_env = gym.make(
            task_data["env_ids"]["maniskill3"],
            obs_mode="rgb+segmentation",
            num_envs=1,
            sim_backend=sim_backend,
            render_backend=render_backend,
        )
        missing = self.sim_env.unwrapped.qdepth_missing_stage
        if missing and not spec.protocol.get("stand_ins"):
            self.sim_env.close()
            raise MissingAsset(missing, "ManiSkill3's Bridge assets", "point MS_ASSET_DIR at the full set", stage=True)
        self.stand_in = bool(missing)
        self.steps = 0
        self._key = ""
        self._demo_row: dict[str, np.ndarray] = {}

    def renderer(self) -> str:
        """SAPIEN's render device of this scene and the Vulkan device it renders with (lavapipe on CPU)."""
        import sapien.render

        device = self.sim_env.unwrapped.scene.sub_scenes[0].render_system.device
        vulkan = sapien.render.get_device_summary().strip().splitlines()
        return f"SAPIEN {sapien.__version__} {device.name} | {vulkan[0] if vulkan else ''}"

    # ----- state read from ManiSkill3 ------------------------------------------------------------------------

    @property
    def _arm(self) -> Any:
        return self.sim_env.unwrapped.agent.controller.controllers["arm"]

    def _ee_at_base(self) -> tuple[np.ndarray, np.ndarray]:
        pose = self._arm.ee_pose_at_base
        return pose.p[0].cpu().numpy().astype(np.float64), pose.q[0].cpu().numpy().astype(np.float64)

    def _observation(self, obs: dict[str, Any]) -> ObservationBatch:
        rgb = obs["sensor_data"][self.camera]["rgb"][0].cpu().numpy().astype(np.uint8)
        image = resize_frame(rgb, self.image_size, str(self.spec.protocol["image_resize"]))
        pos, quat = self._ee_at_base()
        gripper = self.sim_env.unwrapped.agent.robot.get_qpos()[0, -2:].cpu().numpy()
        openness = float(np.clip((gripper.mean() - 0.015) / (0.037 - 0.015), 0.0, 1.0))
        state = bridge_proprio(pos, quat, openness)
        self._demo_row = {"image": rgb, "state": state, "tool_pose": google_proprio(pos, quat, 1 - openness)}
        privileged = [self._privileged(pos)] if self.privileged else []
        depth = {"main": self._metric_depth()[None]} if self.depth else {}
        self.last_observation = ObservationBatch(
            [self._key], {"main": image[None]}, state[None], [self.task.instruction], depth=depth, privileged=privileged
        )
        return self.last_observation

    def _metric_depth(self) -> np.ndarray:
        """The main camera's depth from the picture the observation was just rendered into (the Bridge envs
        accept no depth observation mode, but their shader renders positions with the image): ManiSkill3's
        (1, H, W, 1) int16 millimetres -> (H, W) float32 metres at the policy's frame size, 0 where the camera
        sees nothing."""
        camera = self.sim_env.unwrapped.scene.sensors[self.camera]
        millimetres = camera.get_obs(rgb=False, depth=True, position=False, segmentation=False)["depth"]
        metres = millimetres[0, ..., 0].cpu().numpy().astype(np.float32) / 1000.0
        return resize_bilinear(metres, self.image_size)

    def _privileged(self, ee_pos: np.ndarray) -> dict[str, Any]:
        """Object positions in the robot base frame, for scripted experts only."""
        u = self.sim_env.unwrapped
        base = u.agent.robot.pose
        rotation = quat_wxyz_to_matrix(base.q[0].cpu().numpy())
        origin = base.p[0].cpu().numpy()

        def at_base(actor: Any) -> np.ndarray:
            return rotation.T @ (actor.pose.p[0].cpu().numpy() - origin)

        source = u.objs[u.source_obj_name]
        source_yaw = matrix_to_rpy(rotation.T @ quat_wxyz_to_matrix(source.pose.q[0].cpu().numpy()))[2]
        return {
            "source": at_base(source),
            "source_yaw": float(source_yaw),
            "target": at_base(u.objs[u.target_obj_name]),
            "ee": ee_pos,
            "target_pose": self._arm._target_pose.p[0].cpu().numpy(),
        }

    def simpler_rule_success(self) -> bool:
        """SimplerEnv's success: source centre of mass within the target's horizontal half-diagonal + 3 mm
        and 0-2 cm above it, and the source touching nothing but the target and the robot."""
        u = self.sim_env.unwrapped
        source, target = u.objs[u.source_obj_name], u.objs[u.target_obj_name]

        def centre(actor: Any) -> np.ndarray:
            body = actor._bodies[0]
            return np.asarray((actor._objs[0].pose * body.cmass_local_pose).p, dtype=np.float64)

        offset = centre(source) - centre(target)
        target_half = u.episode_target_obj_bbox_world.cpu().numpy() / 2
        source_half = u.episode_source_obj_bbox_world.cpu().numpy() / 2
        xy_ok = np.linalg.norm(offset[:2]) <= np.linalg.norm(target_half[:2]) + 0.003
        z_ok = offset[2] > 0 and offset[2] - target_half[2] - source_half[2] <= 0.02
        allowed = {target.name, *[link.name for link in u.agent.robot.links]}
        others = [a for a in u.scene.actors.values() if a.name not in allowed and a.name != source.name]
        touching = any(
            float(np.linalg.norm(u.scene.get_pairwise_contact_forces(source, other).cpu().numpy())) > 1e-3
            for other in others
        )
        return bool(xy_ok and z_ok and not touching)

    def demo_frame(self) -> dict[str, np.ndarray]:
        """The last observation as a demonstration row (`sims/simpler/demo_writer.py` lays it out): the main
        camera as rendered, the Bridge proprio (7), and the tool pose with the gripper's closedness in the
        Google robot's layout (position, quaternion xyzw, closedness: 8), which the Fractal layout stores."""
        return dict(self._demo_row)

    # ----- Env protocol ----------------------------------------------------------------------------------------

    def reset(self, episode: EpisodeSpec) -> ObservationBatch:
        self._key = episode.key
        options = {"episode_id": int(episode.variant["episode_id"])} if "episode_id" in episode.variant else {}
        obs, _ = self.sim_env.reset(seed=reset_seed(episode), options=options)
        self.steps = 0
        return self._observation(obs)

    def step(self, action: np.ndarray, observe: bool = True) -> StepResult:
        action = np.asarray(action, dtype=np.float64)
        target = self._arm._target_pose.p[0].cpu().numpy().astype(np.float64)
        current, _ = self._ee_at_base()
        arm = maniskill3_arm_action(action[:3], rpy_to_axis_angle(action[3:6]), target, current)
        observe = observe or self.render_every_step
        with unobserved(self.sim_env, not observe):
            obs, _, _, _, info = self.sim_env.step(
                np.concatenate([arm, [widowx_gripper(float(action[6]))]]).astype(np.float32)
            )
        self.steps += 1
        final = self.steps >= self.max_steps
        details = {"partial_success": float(bool(info["is_src_obj_grasped"][0])), "stand_in_table": self.stand_in}
        success = False
        if final:  # success is read at the last step, never earlier
            success = bool(info["success"][0])
            details["success_simpler_rule"] = self.simpler_rule_success()
        return StepResult(self._observation(obs) if observe else None, final, success, details)


class ManiSkill3Backend(SimplerBackend):
    """The WidowX SIMPLER tasks on ManiSkill3 (physx_cpu + sapien_cpu here; `QDEPTH_BENCH_MS3_SIM=physx_cuda`
    and `QDEPTH_BENCH_MS3_RENDER=sapien_cuda` on a GPU machine)."""

    name = "maniskill3"
    serves_privileged = True
    serves_depth = True

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        assets = bridge_asset_dir()
        if assets is None:
            raise UserError(
                "ManiSkill3's Bridge assets are missing: set MS_ASSET_DIR to a folder holding "
                "data/tasks/bridge_v2_real2sim_dataset and data/robots/widowx (../shared/assets/maniskill)."
            )
        os.environ["MS_ASSET_DIR"] = str(assets)
        imported = sys.modules.get("mani_skill")
        if imported is not None and Path(imported.ASSET_DIR) != assets / "data":
            # ManiSkill3 binds its asset folder at import; a later one would ask to download on stdin.
            raise UserError(
                f"mani_skill was imported with its assets in {imported.ASSET_DIR} before qdepth-bench could point "
                f"it at {assets}; set MS_ASSET_DIR={assets} before anything imports mani_skill."
            )
        try:
            import mani_skill.envs  # noqa: F401 - registers the env ids
        except ImportError as exc:
            raise UserError(
                f"the maniskill3 backend needs mani-skill 3.0.1 ({exc}); run "
                "QDEPTH_EXTRAS=libero,model,simpler bash scripts/setup.sh."
            ) from None

    def make_env(self, task_id: int, requirements: PolicyRequirements) -> ManiSkill3Env:
        try:
            return ManiSkill3Env(
                self.spec,
                self.task_info(task_id),
                self.tasks[task_id],
                requirements,
                os.environ.get("QDEPTH_BENCH_MS3_SIM", "physx_cpu"),
                os.environ.get("QDEPTH_BENCH_MS3_RENDER", "sapien_cpu"),
            )
        except MissingAsset as exc:
            raise UserError(f"{self.spec.name} task {task_id}: {exc}") from None
        except Exception as exc:
            missing = re.search(r"No such file or directory \[([^\]]+)\]", str(exc))
            if missing:  # e.g. the eggplant's visual mesh, which ../shared/assets does not carry
                raise UserError(
                    f"{self.spec.name} task {task_id} needs {missing.group(1)}, which the ManiSkill3 "
                    f"assets in {os.environ['MS_ASSET_DIR']} lack; point MS_ASSET_DIR at the full set "
                    "(python -m mani_skill.utils.download_asset bridge_v2_real2sim)."
                ) from exc
            raise UserError(
                f"cannot build ManiSkill3 env for {self.spec.name} task {task_id} ({type(exc).__name__}: "
                f"{exc}); SAPIEN on CPU needs Mesa >= 25 lavapipe: run `qdepth-bench doctor`."
            ) from exc
