"""Applying a protocol's perturbation (`core.perturbation`) to a LIBERO scene.

Scene perturbations (camera pose and field of view, lights) change the MuJoCo model's rendering fields only,
so physics runs exactly as in the unperturbed twin until the policy acts differently. Initial-state
perturbations (arm joint noise, object layout shifts) edit the official initial state before it is loaded,
with draws from the perturbation's seed and the episode's seed. Sensor noise is added to each rendered frame
before rotation and resize. Paraphrases change the task's instruction (`LiberoBackend.task_info`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.perturbation import Perturbation

#: MuJoCo's free-joint type id (`mjtJoint.mjJNT_FREE`)
_FREE_JOINT = 0


def _axis_angle_quat(axis: np.ndarray, degrees: float) -> np.ndarray:
    """MuJoCo quaternion (w, x, y, z) of a rotation by `degrees` about `axis`."""
    half = np.deg2rad(degrees) / 2.0
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    return np.concatenate([[np.cos(half)], np.sin(half) * axis])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def orbit_camera(
    pos: np.ndarray, quat: np.ndarray, pivot: np.ndarray, yaw_deg: float, pitch_deg: float, distance_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """A camera pose orbited about `pivot`: `yaw_deg` about the world's vertical axis, `pitch_deg` about the
    camera's own horizontal axis (positive raises the camera), and the distance to the pivot scaled; the
    camera keeps aiming at the pivot."""
    right = _quat_matrix(quat)[:, 0]  # a MuJoCo camera looks along its -z; x is its rightward axis
    pitch = _axis_angle_quat(right, -pitch_deg)
    yaw = _axis_angle_quat(np.array([0.0, 0.0, 1.0]), yaw_deg)
    rotation = _quat_mul(yaw, pitch)
    offset = _quat_matrix(rotation) @ (np.asarray(pos) - pivot) * distance_scale
    return pivot + offset, _quat_mul(rotation, np.asarray(quat))


class ScenePerturber:
    """One env's perturbation: what it changes in the model, the initial state and the frames."""

    def __init__(self, perturbation: Perturbation | None, sim: Any, main_camera: str, robot: Any) -> None:
        self.perturbation = perturbation
        self.kind = perturbation.kind if perturbation else ""
        self.params = perturbation.params if perturbation else {}
        self.sim = sim
        self.main_camera = main_camera
        self.arm_qpos = [int(i) for i in robot._ref_joint_pos_indexes]  # robosuite's arm joint addresses
        self._noise: np.random.Generator | None = None

    def apply_scene(self) -> None:
        """Set the model's camera or light fields (the same values every episode: the model persists)."""
        if self.kind in ("camera_pose", "camera_fov"):
            self._camera()
        elif self.kind == "light":
            self._lights()

    def _camera(self) -> None:
        model = self.sim.model._model
        cam = self.sim.model.camera_name2id(self.main_camera)
        if not hasattr(self, "_camera_pose"):  # the model's own pose, kept before the first change
            if int(model.cam_bodyid[cam]) != 0:
                raise UserError(f"camera '{self.main_camera}' moves with a body; only fixed cameras can be perturbed.")
            self._camera_pose = (model.cam_pos[cam].copy(), model.cam_quat[cam].copy(), float(model.cam_fovy[cam]))
            self._pivot = self._aim_point(*self._camera_pose[:2])
        pos, quat, fovy = self._camera_pose
        if self.kind == "camera_fov":
            model.cam_fovy[cam] = fovy + float(self.params["fovy_delta_deg"])
            return
        new_pos, new_quat = orbit_camera(
            pos,
            quat,
            self._pivot,
            float(self.params["yaw_deg"]),
            float(self.params["pitch_deg"]),
            float(self.params["distance_scale"]),
        )
        model.cam_pos[cam], model.cam_quat[cam] = new_pos, new_quat

    def _aim_point(self, pos: np.ndarray, quat: np.ndarray) -> np.ndarray:
        """Where the camera's optical axis passes closest to the scene's free objects (their centroid as the
        model was built): the pivot the camera orbits, so the workspace stays in view."""
        model, data = self.sim.model._model, self.sim.data._data
        objects = [
            data.xpos[int(model.jnt_bodyid[j])] for j in range(model.njnt) if int(model.jnt_type[j]) == _FREE_JOINT
        ]
        centre = np.mean(objects, axis=0) if objects else np.zeros(3)
        axis = -_quat_matrix(quat)[:, 2]
        return pos + axis * float(np.dot(centre - pos, axis))

    def _lights(self) -> None:
        model = self.sim.model._model
        if not hasattr(self, "_light_fields"):
            self._light_fields = (
                model.light_diffuse.copy(),
                model.light_specular.copy(),
                model.light_ambient.copy(),
                model.light_dir.copy(),
                model.vis.headlight.diffuse.copy(),
                model.vis.headlight.ambient.copy(),
                model.vis.headlight.specular.copy(),
            )
        diffuse, specular, ambient, direction, head_diffuse, head_ambient, head_specular = self._light_fields
        scale = float(self.params["intensity"]) * np.asarray(self.params["colour"], dtype=np.float64)
        model.light_diffuse[:] = diffuse * scale
        model.light_specular[:] = specular * scale
        model.light_ambient[:] = ambient * scale
        model.vis.headlight.diffuse[:] = head_diffuse * scale
        model.vis.headlight.ambient[:] = head_ambient * scale
        model.vis.headlight.specular[:] = head_specular * scale
        tilt = _quat_matrix(_axis_angle_quat(np.array([0.0, 1.0, 0.0]), float(self.params["tilt_deg"])))
        model.light_dir[:] = direction @ tilt.T

    def initial_state(self, state: np.ndarray, episode_seed: int) -> np.ndarray:
        """The official initial state with this episode's joint noise or layout shift (a copy), else itself.
        A flattened MuJoCo state is [time, qpos..., qvel...]."""
        perturbation = self.perturbation
        if perturbation is None or self.kind not in ("joint_noise", "layout_shift"):
            return state
        state = np.array(state, dtype=np.float64)
        if self.kind == "joint_noise":
            rng = perturbation.rng(episode_seed, "joints")
            noise = rng.normal(0.0, float(self.params["std_rad"]), len(self.arm_qpos))
            state[[1 + i for i in self.arm_qpos]] += noise
            return state
        model = self.sim.model._model
        rng = perturbation.rng(episode_seed, "layout")
        for joint in range(model.njnt):
            if int(model.jnt_type[joint]) != _FREE_JOINT:
                continue
            angle = rng.uniform(0.0, 2.0 * np.pi)
            address = 1 + int(model.jnt_qposadr[joint])
            state[address : address + 2] += float(self.params["shift_m"]) * np.array([np.cos(angle), np.sin(angle)])
        return state

    def start_episode(self, episode_seed: int) -> None:
        """Restart the sensor-noise draws for an episode (the same frames' noise for every policy)."""
        if self.perturbation is not None and self.kind == "sensor_noise":
            self._noise = self.perturbation.rng(episode_seed, "image")

    def frame(self, image: np.ndarray) -> np.ndarray:
        """A rendered 8-bit frame as the perturbed sensor delivers it."""
        if self._noise is None:
            return image
        noisy = image.astype(np.float64) + self._noise.normal(0.0, float(self.params["std"]), image.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
