"""Writes the LeRobot fixtures of tests/test_dataset_formats.py with LeRobot's own writer, and records what LeRobot's
own reader returns for every frame. Not part of the project's environment; see README.md beside this file:

    PYTHONPATH=<lerobot 0.4.2 and its deps> python make_fixtures.py OUT     # v3.0: libero_tiny_v3[_video]
    PYTHONPATH=<lerobot 0.3.3 and its deps> python make_fixtures.py OUT     # v2.1: libero_tiny_v21
"""

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

# lerobot imports torchvision only for a ToTensor used when reading image *files*; its compiled ops do not
# load beside this torch, so a namespace stands in for it in this scratch process
tv = types.ModuleType("torchvision")
tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)


def to_tensor(img):  # torchvision's ToTensor on an RGB uint8 PIL image: CHW float in [0, 1]
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0


tv.transforms = types.SimpleNamespace(ToTensor=lambda: to_tensor)
sys.modules["torchvision"] = tv
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset  # noqa: E402

V21 = CODEBASE_VERSION == "v2.1"

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
features = {
    "observation.images.image": {"dtype": "image", "shape": (64, 64, 3), "names": ["height", "width", "channel"]},
    "observation.images.wrist_image": {"dtype": "image", "shape": (64, 64, 3), "names": ["height", "width", "channel"]},
    "observation.state": {
        "dtype": "float32",
        "shape": (8,),
        "names": {"motors": ["x", "y", "z", "roll", "pitch", "yaw", "gripper", "gripper"]},
    },
    "action": {
        "dtype": "float32",
        "shape": (7,),
        "names": {"motors": ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]},
    },
}


def make(name, use_videos):
    feats = {k: ({**v, "dtype": "video"} if use_videos and v["dtype"] == "image" else v) for k, v in features.items()}
    ds = LeRobotDataset.create(
        repo_id="qdepth/" + name, fps=10, root=out / name, robot_type="panda", features=feats, use_videos=use_videos
    )
    tasks = ["put the bowl on the plate", "open the top drawer", "put the bowl on the plate"]
    for e, n in enumerate([5, 7, 4]):
        for t in range(n):
            y, x = np.mgrid[0:64, 0:64]
            img = ((x[..., None] * (e + 1) + y[..., None] * (t + 1) + np.array([0, 60, 120])) % 256).astype(np.uint8)
            frame = {
                "observation.images.image": img,
                "observation.images.wrist_image": img[::-1],
                "observation.state": rng.normal(size=8).astype(np.float32),
                "action": rng.normal(size=7).astype(np.float32),
            }
            if V21:  # lerobot 0.3 takes the task beside the frame, 0.4 inside it
                ds.add_frame(frame, task=tasks[e])
            else:
                ds.add_frame({**frame, "task": tasks[e]})
        ds.save_episode()
    if not V21:
        ds.finalize()
    # lerobot's own reader, frame for frame
    if use_videos:  # lerobot decodes videos through torchvision's video API, absent here: PyAV directly
        import av

        path = next((out / name / "videos" / "observation.images.image").rglob("*.mp4"))
        with av.open(str(path)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        codec = av.open(str(path)).streams.video[0].codec_context.name
        (out / f"{name}.expected.json").write_text(
            json.dumps({"codec": codec, "frame_sums": [float(f.sum()) for f in decoded]})
        )
        return
    read = LeRobotDataset("qdepth/" + name, root=out / name)
    frames = []
    for i in range(len(read)):
        item = read[i]
        image = item["observation.images.image"]
        frames.append(
            {
                "episode_index": int(item["episode_index"]),
                "frame_index": int(item["frame_index"]),
                "task": item["task"],
                "state": item["observation.state"].tolist(),
                "action": item["action"].tolist(),
                "image_sum": float(image.sum()),
                "image_shape": list(image.shape),
            }
        )
    (out / f"{name}.expected.json").write_text(json.dumps(frames))
    print(len(frames), read.meta.info["codebase_version"])


if V21:
    make("libero_tiny_v21", False)
else:
    make("libero_tiny_v3", False)
    make("libero_tiny_v3_video", True)
