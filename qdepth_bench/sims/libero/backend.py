"""LIBERO on robosuite/MuJoCo, following the published evaluation protocol (`content/suites/libero.yaml`).

Per episode: seed the env with the protocol seed, reset, load official initial state i, run the settle
steps with the no-op action, then hand the policy observations rotated 180 degrees and resized to 224 px
with the 8-value proprio state, until the env reports success or the step limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.imaging import resize_bilinear, resize_frame, rotate
from qdepth_bench.core.perturbation import perturbation_of
from qdepth_bench.core.policy import ObservationBatch, PolicyRequirements, TaskInfo
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.core.sim import Backend, Env, StepResult
from qdepth_bench.datasets.libero_hdf5 import CAMERA_KEYS
from qdepth_bench.sims.libero import assets as libero_assets
from qdepth_bench.sims.libero.perturb import ScenePerturber
from qdepth_bench.sims.libero.pro import ProSuite

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def _config_dir() -> Path:
    return Path(os.environ.get("LIBERO_CONFIG_PATH") or Path.home() / ".cache" / "qdepth-bench" / "libero")


def _write_libero_config(assets: Path | None) -> None:
    """Write LIBERO's config file so that importing it never prompts on stdin."""
    config_dir = _config_dir()
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    spec = __import__("importlib.util").util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("libero", name="libero")
    root = Path(list(spec.submodule_search_locations)[0]) / "libero"
    config = {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(config_dir / "datasets"),
        "assets": str(assets or root / "assets"),
    }
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "config.yaml"
    if not path.exists() or yaml.safe_load(path.read_text()) != config:
        path.write_text(yaml.safe_dump(config))


def _default_robosuite_macros() -> None:
    """Stand in an empty `robosuite.macros_private` (robosuite's defaults, which it uses anyway) unless the
    user made one. Without it every import prints three warnings on stderr, one naming the virtualenv's path,
    that ask for such a file."""
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("robosuite")  # a top-level find: robosuite itself is not imported yet
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if "robosuite.macros_private" in sys.modules or any((Path(f) / "macros_private.py").exists() for f in folders):
        return
    sys.modules["robosuite.macros_private"] = types.ModuleType("robosuite.macros_private")


def _import_libero(assets: Path | None) -> Any:
    """Import LIBERO quietly with its config written and its asset folder pinned to `assets`."""
    _write_libero_config(assets)
    _default_robosuite_macros()
    with contextlib.redirect_stdout(io.StringIO()):
        import libero.libero as libero_root
        from libero.libero import benchmark
    if assets is None:  # LIBERO's own download, on a machine with internet
        try:
            assets = Path(libero_root.get_assets_path())
        except Exception as exc:  # any download failure means the same fix
            raise UserError(
                f"LIBERO assets not found and LIBERO's download failed ({exc}). Fix: {libero_assets.FIX}."
            ) from exc
        if not assets.is_dir():
            raise UserError(f"LIBERO assets not found. Fix: {libero_assets.FIX}.")
    libero_root._assets_path_cache = str(assets)  # LIBERO's only hook for the folder
    return benchmark


def _blank_sensor(frame: np.ndarray) -> Any:
    """A robosuite camera sensor that renders nothing: the frame of a step nobody reads."""

    def blank(obs_cache: dict[str, Any]) -> np.ndarray:
        return frame

    blank.__modality__ = "image"  # type: ignore[attr-defined]  # robosuite's `sensor` decorator's mark
    return blank


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> axis-angle vector, the orientation part of LIBERO's proprio state."""
    w = float(np.clip(quat[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if np.isclose(sin_half, 0.0):
        return np.zeros(3, dtype=np.float64)
    return np.asarray(quat[:3], dtype=np.float64) * 2.0 * np.arccos(w) / sin_half


def proprio_state(obs: dict[str, np.ndarray]) -> np.ndarray:
    """eef position (3) + eef axis-angle (3) + gripper joint positions (2), in the simulator's float64: a
    policy that wants float32 casts after its own normalisation, as the reference loops do."""
    return np.concatenate(
        [obs["robot0_eef_pos"], quat_to_axis_angle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]]
    ).astype(np.float64)


@dataclass(frozen=True)
class HardResetState:
    """What LIBERO's hard reset (seed, rebuild the model, reset) leaves behind that a soft reset would not.

    A soft reset draws the placements from a generator that the model rebuild has not advanced, so the
    pre-episode configuration differs; `set_init_state` then overwrites positions and velocities, but
    MuJoCo's solver warm start (`qacc_warmstart`), the fixtures' placed body poses and numpy's global
    generator still carry the difference, and closed-loop episodes drift away from LIBERO's own. This keeps
    MuJoCo's whole integration state (time, qpos, qvel, act, warm start, controls, applied forces, mocap),
    the body poses placement writes into the model, and the generator state.
    """

    seed: int
    physics: np.ndarray
    body_pos: np.ndarray
    body_quat: np.ndarray
    rng: dict[str, Any] | tuple[Any, ...]

    @classmethod
    def capture(cls, sim: Any, seed: int) -> HardResetState:
        import mujoco  # after MUJOCO_GL is set

        model, data = sim.model._model, sim.data._data  # robosuite's handles on MuJoCo's structs
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(model, spec))
        mujoco.mj_getState(model, data, physics, spec)
        return cls(seed, physics, model.body_pos.copy(), model.body_quat.copy(), np.random.get_state())

    def restore(self, sim: Any) -> None:
        import mujoco

        model, data = sim.model._model, sim.data._data
        model.body_pos[:] = self.body_pos
        model.body_quat[:] = self.body_quat
        # No forward pass here: each one refines the warm start in place, and `set_init_state` runs the one
        # that follows LIBERO's reset.
        mujoco.mj_setState(model, data, self.physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        np.random.set_state(self.rng)


class LiberoEnv(Env):
    """One LIBERO task's simulator, reused across its episodes."""

    def __init__(
        self, spec: SuiteSpec, task: TaskInfo, bddl_file: str, init_states: np.ndarray, requirements: PolicyRequirements
    ) -> None:
        from libero.libero.envs import OffScreenRenderEnv

        protocol = spec.protocol
        self.task = task
        self.protocol = protocol
        self.init_states = init_states
        # The main camera is always rendered (videos, the protocol's one required view); others on request.
        self.roles = ["main", *[r for r in requirements.cameras if r != "main"]]
        self.cameras = {role: protocol["cameras"][role] for role in self.roles}
        self.policy_image_size = requirements.image_size
        self.privileged = requirements.privileged
        self.noop = np.asarray(protocol["noop_action"], dtype=np.float64)
        size = int(protocol["render_size"])
        # Built for soft resets; `reset` replays what LIBERO's hard reset with the episode's seed leaves behind.
        self.depth = requirements.depth
        seed = int(protocol["env_seed"])
        # Building the env loads the model, places the objects and resets, in the order a hard reset does: built
        # right after LIBERO's `seed` (numpy's global generator), it is where seed + hard reset would put it.
        np.random.seed(seed)
        self.sim_env = OffScreenRenderEnv(
            bddl_file_name=bddl_file,
            camera_heights=size,
            camera_widths=size,
            camera_names=list(self.cameras.values()),
            hard_reset=False,
            camera_depths=self.depth,
        )
        self.sim_env.sim.forward()  # the forward pass robosuite's reset runs after placing
        # a protocol's perturbation (none for the published protocol); the camera aims where the scene is now
        self.perturber = ScenePerturber(
            perturbation_of(protocol), self.sim_env.sim, self.cameras["main"], self.sim_env.robots[0]
        )
        self.perturber.apply_scene()
        self._key = ""
        #: the first episode with the protocol's seed resets softly too: one model build per env, not two
        self._hard_reset_state = HardResetState.capture(self.sim_env.sim, seed)
        self._blank_images = {
            f"{camera}_image": _blank_sensor(np.zeros((size, size, 3), np.uint8)) for camera in self.cameras.values()
        }
        self._real_sensors: dict[str, Any] = {}

    def renderer(self) -> str:
        """MuJoCo's offscreen GL context (EGL or OSMesa, `MUJOCO_GL`): vendor, renderer and version strings."""
        context = getattr(self.sim_env.env.sim, "_render_context_offscreen", None)
        if context is None:
            return ""
        from OpenGL import GL

        context.gl_ctx.make_current()
        names = (GL.GL_VENDOR, GL.GL_RENDERER, GL.GL_VERSION)
        return " | ".join(bytes(GL.glGetString(name) or b"").decode(errors="replace") for name in names)

    def _render_cameras(self, on: bool) -> None:
        """Let robosuite's camera observables render (on) or hand back a blank frame without rendering (off).

        Only the sensor function is swapped: each observable's sampling clock and flags advance exactly as
        when it renders, so the next rendered frame is sampled at the same physics substep as in an env that
        renders every step. (Disabling the observable instead resets its clock, which moves that substep.)
        A hard reset builds new observables, so this looks them up every time."""
        if self.render_every_step:
            on = True
        observables = self.sim_env.env._observables
        for name, blank in self._blank_images.items():
            observable = observables[name]
            if observable._sensor is not blank:
                self._real_sensors[name] = observable._sensor
            # robosuite's own setter (`set_sensor`) renders once to check the sensor; assigning does not
            observable._sensor = self._real_sensors[name] if on else blank

    def _observation(self, obs: dict[str, np.ndarray]) -> ObservationBatch:
        self.raw_observation = obs
        images = {
            role: resize_frame(
                rotate(self.perturber.frame(obs[f"{camera}_image"]), int(self.protocol["image_rotation_deg"])),
                self.policy_image_size,
                str(self.protocol["image_resize"]),
            )[None]
            for role, camera in self.cameras.items()
        }
        privileged = [self._privileged(obs)] if self.privileged else []
        depth = (
            {role: self._metric_depth(obs[f"{camera}_depth"])[None] for role, camera in self.cameras.items()}
            if self.depth
            else {}
        )
        self.last_observation = ObservationBatch(
            [self._key], images, proprio_state(obs)[None], [self.task.instruction], depth=depth, privileged=privileged
        )
        return self.last_observation

    def _metric_depth(self, buffer: np.ndarray) -> np.ndarray:
        """OpenGL depth buffer (H, W, 1) in [0, 1] -> metres, rotated and resized like the images.

        MuJoCo's near and far clipping planes are fractions of the model's extent; the buffer is the usual
        non-linear z, so d = near / (1 - z (1 - near / far)).
        """
        model = self.sim_env.sim.model
        extent = model.stat.extent
        near, far = model.vis.map.znear * extent, model.vis.map.zfar * extent
        metres = near / (1.0 - buffer[..., 0].astype(np.float64) * (1.0 - near / far))
        return resize_bilinear(rotate(metres, int(self.protocol["image_rotation_deg"])), self.policy_image_size)

    def demo_frame(self) -> dict[str, np.ndarray]:
        """The last observation in LIBERO's dataset layout (frames as rendered) with the simulator state:
        one row of a demonstration file."""
        obs = self.raw_observation
        row = {f"obs/{CAMERA_KEYS[role]}": obs[f"{camera}_image"] for role, camera in self.cameras.items()}
        row.update(
            {
                "obs/ee_pos": obs["robot0_eef_pos"],
                "obs/ee_ori": quat_to_axis_angle(obs["robot0_eef_quat"]),
                "obs/gripper_states": obs["robot0_gripper_qpos"],
                "obs/joint_states": obs["robot0_joint_pos"],
                "states": self.sim_env.sim.get_state().flatten(),
            }
        )
        return row

    def restore(self, sim_state: np.ndarray) -> ObservationBatch:
        """Put the simulator in a recorded state (a flattened MuJoCo state) and observe it: how demonstrations
        are re-rendered, e.g. for their ground-truth depth."""
        self._render_cameras(True)
        return self._observation(self.sim_env.set_init_state(np.asarray(sim_state)))

    def _privileged(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Object positions, narrow grasp axes and the finger axis, for scripted experts only."""
        xpos = self.sim_env.sim.data.body_xpos
        left, right = self._finger_bodies
        return {
            "objects_of_interest": list(self._grasp_geoms),
            "eef_pos": np.array(obs["robot0_eef_pos"]),
            "finger_axis": np.array(xpos[right] - xpos[left]),
            "grasp_axes": {name: self._narrow_axis(geom) for name, geom in self._grasp_geoms.items()},
            "positions": {
                k[:-4]: np.array(v)
                for k, v in obs.items()
                if k.endswith("_pos") and not k.startswith("robot0") and "_to_" not in k
            },
        }

    def _index_privileged_bodies(self) -> None:
        """Look up the finger bodies and each object's largest box collision geom (ids of the current model)."""
        model = self.sim_env.sim.model
        self._finger_bodies = (model.body_name2id("gripper0_leftfinger"), model.body_name2id("gripper0_rightfinger"))
        bodies = {model.body_id2name(i) for i in range(model.nbody)}
        self._grasp_geoms: dict[str, int | None] = {}
        for name in self.sim_env.obj_of_interest:
            body = model.body_name2id(f"{name}_main" if f"{name}_main" in bodies else name)
            boxes = [
                g
                for g in range(model.ngeom)
                if model.geom_bodyid[g] == body and model.geom_type[g] == 6 and model.geom_contype[g]
            ]
            self._grasp_geoms[name] = max(boxes, key=lambda g: float(np.prod(model.geom_size[g]))) if boxes else None

    def _narrow_axis(self, geom: int | None) -> np.ndarray | None:
        """World xy direction of a box geom's narrowest horizontal extent; None for objects with no box."""
        if geom is None:
            return None
        axes = self.sim_env.sim.data.geom_xmat[geom].reshape(3, 3)
        horizontal = [i for i in range(3) if abs(axes[2, i]) < 0.5]
        if len(horizontal) < 2:
            return None
        narrow = min(horizontal, key=lambda i: self.sim_env.sim.model.geom_size[geom][i])
        return np.array(axes[:2, narrow])

    def reset(self, episode: EpisodeSpec) -> ObservationBatch:
        """Start an episode from official initial state `init_state`, or from a fresh draw (`sample_seed`),
        then run the settle steps."""
        if "sample_seed" in episode.variant:
            seed = int(episode.variant["sample_seed"]) % 2**32
            self._fresh_episode(episode, seed)  # robosuite's placement samplers draw from the seeded generator
            state = self._sampled_state(seed)
        else:
            index = int(episode.variant["init_state"])
            if not 0 <= index < len(self.init_states):
                raise UserError(
                    f"{self.task.suite} task {self.task.task_id} has {len(self.init_states)} initial "
                    f"states; episode {episode.episode_index} asks for state {index}. Use --episodes "
                    f"{len(self.init_states)} or fewer."
                )
            self._fresh_episode(episode, int(self.protocol["env_seed"]))
            state = self.init_states[index]
        self.perturber.apply_scene()  # a hard reset rebuilds the model with the scene's own camera and lights
        self.perturber.start_episode(episode.seed)
        state = self.perturber.initial_state(state, episode.seed)
        settle = int(self.protocol["settle_steps"])
        self._render_cameras(settle == 0)  # only the observation after the last settle step is read
        obs = self.sim_env.set_init_state(state)
        for i in range(settle):
            self._render_cameras(i == settle - 1)
            obs, _, _, _ = self.sim_env.step(self.noop)
        return self._observation(obs)

    def _fresh_episode(self, episode: EpisodeSpec, seed: int) -> None:
        """Seed and reset as LIBERO's hard reset does, then leave the simulator exactly as that reset would.

        A hard reset rebuilds the MuJoCo model, which is slow. Building the env stands in for the hard reset
        with the protocol's seed; another seed (demonstration draws) gets a real one. What it leaves behind is
        kept (`HardResetState`): episodes with that seed reset softly (robosuite's controller, gripper and
        observables) and then restore it, so every episode starts bit for bit where LIBERO's own reset of a
        fresh env starts it (tested; `benchmarks/libero_reset_cost.py` times both)."""
        self._key = episode.key
        self.sim_env.seed(seed)
        self._render_cameras(False)  # reset's own observation is never read
        if self._hard_reset_state.seed != seed:
            self.sim_env.env.hard_reset = True
            try:
                self.sim_env.reset()
            finally:
                self.sim_env.env.hard_reset = False
            self._hard_reset_state = HardResetState.capture(self.sim_env.sim, seed)
        else:
            self.sim_env.reset()
            # robosuite's gripper integrates its command into `current_action`; a hard reset makes a new
            # gripper, a soft one keeps the last episode's, which would move the fingers during the settle steps.
            for robot in self.sim_env.robots:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)
            self._hard_reset_state.restore(self.sim_env.sim)
        if self.privileged:
            self._index_privileged_bodies()

    def _sampled_state(self, seed: int) -> np.ndarray:
        """The state LIBERO's placement regions drew at reset, for demonstrations that must not reuse the
        50 evaluation states: a draw that coincides with one (object positions within 1 mm) is refused."""
        state = self.sim_env.sim.get_state().flatten()
        n = min(len(state), self.init_states.shape[1])
        nearest = np.abs(self.init_states[:, 1:n] - state[1:n]).max(axis=1).min()
        if nearest < 1e-3:
            raise RuntimeError(f"sampled initial state {seed} coincides with an evaluation initial state")
        return state

    def step(self, action: np.ndarray, observe: bool = True) -> StepResult:
        self._render_cameras(observe)
        obs, _, done, info = self.sim_env.step(np.asarray(action, dtype=np.float64))
        # a digest of the whole MuJoCo state: episodes recorded elsewhere (other workers, order, machine)
        # compare beyond outcome and step count
        digest = hashlib.sha1(self.sim_env.sim.get_state().flatten().tobytes()).hexdigest()[:16]
        observation = self._observation(obs) if observe or self.render_every_step else None
        return StepResult(observation, bool(done), bool(done), {**info, "sim_state_digest": digest})


class LiberoBackend(Backend):
    """Tasks, initial states and environments of one LIBERO suite."""

    serves_depth = True
    serves_privileged = True

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        assets = libero_assets.require_assets() if libero_assets.find_assets()[0] else None
        benchmark = _import_libero(assets)
        self.suite: Any
        if "task_files" in spec.protocol:  # LIBERO-PRO: scenes and initial states from its package's files
            self.suite = ProSuite(spec.extra["benchmark"])
            self.bddl_root = self.suite.bddl_root
            return
        with contextlib.redirect_stdout(io.StringIO()):
            self.suite = benchmark.get_benchmark_dict()[spec.extra["benchmark"]]()
        self.bddl_root = Path(benchmark.get_libero_path("bddl_files"))

    def _task(self, task_id: int) -> Any:
        if not 0 <= task_id < self.suite.n_tasks:
            raise UserError(f"{self.spec.name} has tasks 0..{self.suite.n_tasks - 1}; got task {task_id}.")
        return self.suite.get_task(task_id)

    def bddl_file_of(self, task_id: int) -> str:
        return self._task(task_id).bddl_file

    def task_id_of_scene(self, scene_file: str) -> int | None:
        """The task whose BDDL file has this name (demonstration files record it), or None."""
        name = Path(scene_file).name
        return next((i for i in range(self.suite.n_tasks) if self.suite.get_task(i).bddl_file == name), None)

    def task_info(self, task_id: int) -> TaskInfo:
        task = self._task(task_id)
        protocol = self.spec.protocol
        perturbation = perturbation_of(protocol)
        return TaskInfo(
            suite=self.spec.name,
            task_id=task_id,
            task_name=task.name,
            instruction=perturbation.instruction(task.language) if perturbation else task.language,
            robot=self.spec.robot,
            action_low=tuple(protocol["action_low"]),
            action_high=tuple(protocol["action_high"]),
            noop_action=tuple(protocol["noop_action"]),
            state_layout=protocol["state_layout"],
        )

    def make_env(self, task_id: int, requirements: PolicyRequirements) -> LiberoEnv:
        task = self._task(task_id)
        with contextlib.redirect_stdout(io.StringIO()):
            init_states = np.asarray(self.suite.get_task_init_states(task_id))
        bddl_file = str(self.bddl_root / task.problem_folder / task.bddl_file)
        try:
            return LiberoEnv(self.spec, self.task_info(task_id), bddl_file, init_states, requirements)
        except Exception as exc:  # a simulator that cannot be built is a setup problem
            raise UserError(
                f"cannot build the LIBERO simulator for {self.spec.name} task {task_id} "
                f"({type(exc).__name__}: {exc}). Run `qdepth-bench doctor` to check the renderer "
                f"(MUJOCO_GL={os.environ.get('MUJOCO_GL')}; egl or osmesa) and the assets."
            ) from exc
