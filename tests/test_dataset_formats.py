"""Every dataset format read against its own tools' readings (fixtures written by LeRobot's and
tensorflow-datasets' own writers, see tests/data/*/README.md), the Open-X conventions on known values, and
the tiny QDepth-VLA trained a few steps from each fixture through the streaming pipeline."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets import depth as depth_cache
from qdepth_bench.datasets.lerobot import LeRobotSource
from qdepth_bench.datasets.rlds import (
    RldsSource,
    _record_at,
    binarize_gripper,
    parse_example,
    relative_to_absolute_gripper,
    standardize,
)

DATA = Path(__file__).parent / "data"
LEROBOT, RLDS = DATA / "lerobot", DATA / "rlds"
RLDS_EXPECTED = json.loads((RLDS / "expected.json").read_text())


def rlds_folder(name: str) -> Path:
    return RLDS / RLDS_EXPECTED[name]["folder"]


@pytest.mark.parametrize("name", ["libero_tiny_v3", "libero_tiny_v21"])
def test_lerobot_reads_frame_for_frame_as_lerobot_does(name, tmp_path):
    """Each fixture read against the readings of the LeRobot that wrote it (0.4.2 for v3.0, 0.3.3 for v2.1)."""
    expected = json.loads((LEROBOT / f"{name}.expected.json").read_text())
    source = LeRobotSource(LEROBOT / name, image_size=64, cameras=("main", "wrist"))
    rows = []
    for key, length in source.episodes():
        episode = source.episode(key)
        assert len(episode) == length and episode.images["wrist"].shape == (length, 64, 64, 3)
        for t in range(length):
            rows.append((key, t, episode.instruction, episode.state[t], episode.actions[t], episode.images["main"][t]))
    assert len(rows) == len(expected) == 16
    for (key, t, instruction, state, action, image), want in zip(rows, expected, strict=True):
        assert key == f"episode_{want['episode_index']}" and t == want["frame_index"]
        assert instruction == want["task"]
        np.testing.assert_allclose(state, want["state"], rtol=1e-6)
        np.testing.assert_allclose(action, want["action"], rtol=1e-6)
        assert want["image_shape"] == [3, 64, 64]  # LeRobot's CHW float in [0, 1]
        assert image.astype(np.float64).sum() / 255.0 == pytest.approx(want["image_sum"], rel=1e-6)


def test_lerobot_v3_frames_from_its_mp4_videos():
    """Episode 1 of a v3 dataset lives in the middle of a shared AV1 file: its frames start at its timestamp."""
    expected = json.loads((LEROBOT / "libero_tiny_v3_video.expected.json").read_text())
    source = LeRobotSource(LEROBOT / "libero_tiny_v3_video", image_size=64)
    sums = [
        float(f.astype(np.float64).sum()) for key, _ in source.episodes() for f in source.episode(key).images["main"]
    ]
    assert sums == expected["frame_sums"]  # the same pixels PyAV decodes, frame for frame


def test_lerobot_errors_name_the_file_and_the_fix(tmp_path):
    broken = tmp_path / "v3"
    shutil.copytree(LEROBOT / "libero_tiny_v3", broken)
    (broken / "meta" / "tasks.parquet").unlink()
    with pytest.raises(UserError, match=r"tasks.parquet is missing"):
        LeRobotSource(broken)
    with pytest.raises(UserError, match=r"no state column among .*set the recipe's data.keys.state"):
        LeRobotSource(LEROBOT / "libero_tiny_v3", keys={"state": ("observation.joints",)}).lowdim("episode_0")


def test_open_x_gripper_conversions_on_known_values():
    # Bridge: > 0.95 open, < 0.05 closed, in between takes the next decided value
    np.testing.assert_array_equal(
        binarize_gripper(np.array([1.0, 0.97, 0.6, 0.3, 0.02, 0.0, 0.5, 0.99])), [1, 1, 0, 0, 0, 0, 1, 1]
    )
    # an episode ending in between keeps those values (nothing decided follows them)
    np.testing.assert_array_equal(binarize_gripper(np.array([0.0, 0.5, 0.5])), [0, 0.5, 0.5])
    # Fractal: +1 close, -1 open, 0 hold -> 1 open / 0 closed; before the first command the opposite state
    np.testing.assert_array_equal(
        relative_to_absolute_gripper(np.array([0, 0, 1, 0, 0, -1, 0.0])), [1, 1, 0, 0, 0, 1, 1]
    )
    np.testing.assert_array_equal(relative_to_absolute_gripper(np.array([0, -1.0])), [0, 1])
    np.testing.assert_array_equal(relative_to_absolute_gripper(np.zeros(3)), [1, 1, 1])  # never commanded: open
    # Bridge's movement relabelled from the reached states, the last step dropped
    state = np.cumsum(np.ones((4, 7), np.float32), axis=0)
    actions = np.zeros((4, 7), np.float32)
    actions[:, 6] = [1.0, 0.0, 0.0, 1.0]
    new_state, new_actions, kept = standardize("bridge", state, actions)
    assert kept == 3 and new_state.shape == (3, 7)
    np.testing.assert_array_equal(new_actions[:, :6], np.ones((3, 6)))
    np.testing.assert_array_equal(new_actions[:, 6], [1, 0, 0])


@pytest.mark.parametrize(
    ("name", "layout", "state_dim", "image_key"),
    [
        ("bridge_dataset", "bridge", 7, "steps/observation/image_0"),
        ("fractal20220817_data", "fractal", 8, "steps/observation/image"),
        ("libero_spatial_no_noops", "libero", 8, "steps/observation/image"),
    ],
)
def test_rlds_reads_what_tensorflow_datasets_reads(name, layout, state_dim, image_key, tmp_path):
    folder = tmp_path / name
    shutil.copytree(rlds_folder(name), folder)  # the index is written beside the dataset
    source = RldsSource(folder, layout, image_size=224)
    expected = RLDS_EXPECTED[name]["episodes"]
    assert len(source.episodes()) == len(expected)
    for (key, length), want in zip(source.episodes(), expected, strict=True):
        raw_state = np.concatenate(
            [np.asarray(want[k], np.float32).reshape(want["steps"], -1) for k in _state_keys(layout)], axis=1
        )
        raw_actions = np.concatenate(
            [np.asarray(want[k], np.float32).reshape(want["steps"], -1) for k in _action_keys(layout)], axis=1
        )
        state, actions, kept = standardize(layout, raw_state, raw_actions)
        assert length == kept and source.lowdim(key)[0].shape == (kept, state_dim)
        np.testing.assert_allclose(source.lowdim(key)[0], state, rtol=1e-6)
        np.testing.assert_allclose(source.lowdim(key)[1], actions, rtol=1e-6)
        texts = want.get("observation/natural_language_instruction") or want["language_instruction"]
        assert source.instruction(key) == texts[0] and texts[0]
        episode = source.episode(key)
        assert episode.images["main"].shape == (kept, 224, 224, 3)  # 256 x 256 / 256 x 320 -> the model's size
    assert (folder / f"train-{layout}-qdepth_index.npz").is_file()  # the next training starts at once
    first = parse_example(_record_at(source.shards[0], 0), {image_key})[image_key]
    frames = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in first]
    assert list(np.stack(frames).shape) == expected[0]["image_shape"]
    # TensorFlow's and Pillow's JPEG decoders round differently: under one grey level apart on average
    np.testing.assert_allclose([f.mean() for f in frames], expected[0]["image_mean"], atol=1.0)


def _state_keys(layout: str) -> list[str]:
    return (
        ["observation/base_pose_tool_reached", "observation/gripper_closed"]
        if layout == "fractal"
        else ["observation/state"]
    )


def _action_keys(layout: str) -> list[str]:
    if layout == "fractal":
        return ["action/world_vector", "action/rotation_delta", "action/gripper_closedness_action"]
    return ["action"]


def test_rlds_errors_name_the_field_and_the_fix(tmp_path):
    folder = tmp_path / "bridge"
    shutil.copytree(rlds_folder("bridge_dataset"), folder)
    with pytest.raises(UserError, match=r"has no field steps/observation/joints .*set data.layout"):
        RldsSource(folder, "bridge", keys={"state": ("steps/observation/joints",)}).episodes()
    with pytest.raises(UserError, match="not a TFDS builder folder"):
        RldsSource(tmp_path)


FORMATS = [
    ("lerobot", LEROBOT / "libero_tiny_v3", {}),
    ("lerobot", LEROBOT / "libero_tiny_v21", {}),
    ("lerobot", LEROBOT / "libero_tiny_v3_video", {}),
    ("rlds", rlds_folder("bridge_dataset"), {"layout": "bridge"}),
    ("rlds", rlds_folder("fractal20220817_data"), {"layout": "fractal"}),
    ("rlds", rlds_folder("libero_spatial_no_noops"), {"layout": "libero"}),
]


def depth_coded(tmp_path: Path, datasets: list[tuple[Path, str, str]]) -> Path:
    """Seeded relative depth for every frame of some datasets ((path, format, layout) each; every episode's
    instruction checked non-empty), a one-step VQ-VAE trained on it into tmp_path/vq, and each dataset's
    depth encoded with it (what the paper's model trains on); returns the VQ-VAE folder."""
    from qdepth_bench.datasets.formats import open_source
    from qdepth_bench.train.recipe import load_recipe
    from qdepth_bench.train.vqvae import encode_dataset, train_vqvae

    rng = np.random.default_rng(0)
    for dataset, fmt, layout in datasets:
        source = open_source(dataset, fmt, 224, layout=layout)
        for key, length in source.episodes():
            assert source.instruction(key)
            relative = rng.integers(0, 255, (length, 224, 224), dtype=np.uint8)
            depth_cache.write_demo(depth_cache.cache_path(dataset), key, relative, np.zeros((length, 2)), "model")
    vq = tmp_path / "vq.json"
    vq.write_text(
        json.dumps(
            {
                "kind": "vqvae",
                "out": str(tmp_path / "vq"),
                "data": {"paths": [str(d) for d, _, _ in datasets]},
                "model": {"overrides": {"hidden": 8}},
                "train": {"steps": 1, "batch_size": 2},
            }
        )
    )
    train_vqvae(load_recipe(vq))
    for dataset, _, _ in datasets:
        encode_dataset(dataset, tmp_path / "vq")
    return tmp_path / "vq"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fmt", "fixture", "extra"),
    FORMATS,
    ids=["lerobot_v3", "lerobot_v21", "lerobot_v3_video", "bridge", "fractal", "libero_rlds"],
)
def test_tiny_qdepth_trains_from_each_format(fmt, fixture, extra, tmp_path):
    """The paper's model (depth tokens from a VQ-VAE's codes) for two steps from each fixture, through the
    pipeline with a DataLoader worker: non-empty instructions, frames at 224 px, depth targets per frame."""
    from qdepth_bench.train.policy import train_policy
    from qdepth_bench.train.recipe import load_recipe

    dataset = tmp_path / fixture.name
    shutil.copytree(fixture, dataset)
    depth_coded(tmp_path, [(dataset, fmt, extra.get("layout", "bridge"))])
    recipe = tmp_path / "recipe.json"
    recipe.write_text(
        json.dumps(
            {
                "name": "t",
                "out": str(tmp_path / "out"),
                "model": {"size": "tiny", "variant": "qdepth", "overrides": {"chunk_size": 2}},
                "vqvae": str(tmp_path / "vq"),
                "data": {"format": fmt, "paths": [str(dataset)], "shuffle_buffer": 4, **extra},
                "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "log_every": 1, "workers": 1},
            }
        )
    )
    checkpoint = train_policy(load_recipe(recipe))
    rows = list(csv.DictReader((tmp_path / "out" / "log.csv").open()))
    assert len(rows) == 2 and all(float(r["depth"]) > 0 and np.isfinite(float(r["flow"])) for r in rows)
    recorded = json.loads((checkpoint / "config.json").read_text())["data"]["datasets"][0]
    assert recorded["image_size"] == 224 and recorded["rotation"] == 0 and recorded["format"] == fmt


def test_padded_action_dims_carry_no_loss_and_no_gradient():
    """Rows whose dataset has 7 of the model's 8 action dimensions: whatever the padded dimension holds (its
    target or its noise), the loss is the same to the bit, and no weight that reads or writes that dimension
    (state and action input columns, velocity output row) gets a gradient; an all-real mask is plain MSE."""
    import torch

    from qdepth_bench.models.qdepth.config import build_config
    from qdepth_bench.models.qdepth.model import Batch, QDepthVLA

    torch.manual_seed(0)
    model = QDepthVLA(build_config("tiny", "pi0", state_dim=8, action_dim=8, chunk_size=2))
    rows = 3
    tokens = torch.randint(0, 100, (rows, 6))
    state = torch.randn(rows, 8)
    state[:, 7] = 0  # padded state: zeros after normalisation, as the pipeline pads it
    real = torch.ones(rows, 8)
    real[:, 7] = 0
    images = torch.rand(rows, 3, 224, 224) * 2 - 1
    noise, tau = torch.randn(rows, 2, 8), torch.rand(rows)

    def flow(actions: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch = Batch(images, tokens, torch.ones_like(tokens, dtype=torch.bool), state, actions, action_dim_mask=mask)
        return model(batch, noise, tau)["flow"]

    actions = torch.randn(rows, 2, 8)
    model.zero_grad()
    loss = flow(actions, noise, real)
    loss.backward()
    other_actions, other_noise = actions.clone(), noise.clone()
    other_actions[..., 7], other_noise[..., 7] = 5.0, -3.0  # anything in the padded dimension
    with torch.no_grad():
        assert torch.equal(flow(other_actions, other_noise, real), loss)
        assert not torch.equal(flow(other_actions, other_noise, None), flow(actions, noise, None))  # it would count
        full = torch.ones(rows, 8)
        assert torch.allclose(flow(actions, noise, full), flow(actions, noise, None), rtol=1e-6, atol=0)
    assert torch.count_nonzero(model.action_out.weight.grad[7]) == 0 and float(model.action_out.bias.grad[7]) == 0
    assert torch.count_nonzero(model.action_in.weight.grad[:, 7]) == 0
    assert torch.count_nonzero(model.state_in.weight.grad[:, 7]) == 0
    assert torch.count_nonzero(model.action_out.weight.grad[:7]) > 0  # the real dimensions do learn
    # inference holds the padded dimension at zero, as training saw it
    batch = Batch(images[:1], tokens[:1], torch.ones_like(tokens[:1], dtype=torch.bool), state[:1])
    batch.action_dim_mask = real[:1]
    assert torch.count_nonzero(model.sample_actions(batch, noise=noise[:1])[..., 7]) == 0


@pytest.mark.slow
def test_bridge_and_fractal_mix_padded_to_the_model_widths(tmp_path):
    """The tiny paper model trains on Bridge (7-dim state) + Fractal (8-dim state) padded to 8 state and 8
    action dimensions (openpi-style wider actions, so both datasets' actions are padded): each dataset is
    normalised with its own statistics and records its widths and padding; batches carry zeros and a 0 mask
    where a row's dataset has no dimension; the exported policy drives a WidowX-layout suite with Bridge's
    statistics and 7-dim state and a Google-layout one with Fractal's."""
    from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, TaskInfo
    from qdepth_bench.models.qdepth.config import build_config
    from qdepth_bench.models.qdepth.tokenizer import HashWordTokenizer
    from qdepth_bench.policies.qdepth import QDepthPolicy, QDepthPolicyConfig
    from qdepth_bench.train.data import make_train_loader, open_training_data
    from qdepth_bench.train.policy import train_policy
    from qdepth_bench.train.recipe import load_recipe

    bridge, fractal = tmp_path / "bridge_dataset" / "1.0.0", tmp_path / "fractal20220817_data" / "0.1.0"
    shutil.copytree(rlds_folder("bridge_dataset"), bridge)
    shutil.copytree(rlds_folder("fractal20220817_data"), fractal)
    vq = depth_coded(tmp_path, [(bridge, "rlds", "bridge"), (fractal, "rlds", "fractal")])
    recipe_path = tmp_path / "recipe.json"
    recipe_path.write_text(
        json.dumps(
            {
                "name": "t",
                "out": str(tmp_path / "out"),
                "model": {"size": "tiny", "variant": "qdepth", "overrides": {"chunk_size": 2, "action_dim": 8}},
                "vqvae": str(vq),
                "data": {
                    "format": "rlds",
                    "shuffle_buffer": 4,
                    "datasets": [
                        {"paths": [str(bridge)], "layout": "bridge", "weight": 1.0},
                        {"paths": [str(fractal)], "layout": "fractal", "weight": 1.0},
                    ],
                },
                "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "workers": 1},
            }
        )
    )
    recipe = load_recipe(recipe_path)
    data = open_training_data(recipe)
    assert data.dims == (8, 8)
    widths = {s["name"]: (s["state_dim"], s["state_padding"], s["action_dim"], s["action_padding"]) for s in data.specs}
    assert widths == {"bridge_dataset": (7, 1, 7, 1), "fractal20220817_data": (8, 0, 7, 1)}
    assert [len(s.state_low) for s in data.stats] == [7, 8] and data.stats[0].action_low != data.stats[1].action_low
    config = build_config("tiny", "qdepth", state_dim=8, action_dim=8, chunk_size=2)
    loader = make_train_loader(recipe, data, config, HashWordTokenizer(100, 16))
    spec_of = {}
    for _ in range(4):
        batch = loader.next()
        for row, (_, entry, _) in enumerate(loader.last_ids):
            spec = data.entries[entry].spec
            spec_of[spec] = True
            assert batch.action_dim_mask[row].tolist() == [1.0] * 7 + [0.0]
            assert torch_all_zero(batch.actions[row, :, 7])
            assert torch_all_zero(batch.state[row, 7]) == (spec == 0)  # Bridge's eighth state is padding
    loader.close()
    assert set(spec_of) == {0, 1}  # both datasets reached the batches

    checkpoint = train_policy(recipe)
    rows = list(csv.DictReader((tmp_path / "out" / "log.csv").open()))
    assert len(rows) == 3 and all(np.isfinite(float(r["flow"])) and float(r["depth"]) > 0 for r in rows)
    saved = json.loads((checkpoint / "datasets.json").read_text())
    assert [(d["name"], d["state_layout"], len(d["stats"]["state_low"])) for d in saved] == [
        ("bridge_dataset", "bridge_eef_pos_rpy_openness", 7),
        ("fractal20220817_data", "google_eef_pos_quat_xyzw_closedness", 8),
    ]
    policy = QDepthPolicy(QDepthPolicyConfig(checkpoint=str(checkpoint)))
    assert policy.requirements.action_dim == 7
    image = np.full((1, 224, 224, 3), 128, np.uint8)
    for n, (layout, state_dim, stats) in enumerate(
        [("bridge_eef_pos_rpy_openness", 7, data.stats[0]), ("google_eef_pos_quat_xyzw_closedness", 8, data.stats[1])]
    ):
        task = TaskInfo("s", 0, "t", "pick the can", "r", (0,) * 7, (1,) * 7, (0,) * 7, layout)
        policy.reset(EpisodeContext(f"e{n}", task, n))
        actions = policy.act(ObservationBatch([f"e{n}"], {"main": image}, np.zeros((1, state_dim)), ["pick the can"]))
        assert actions.shape == (1, 2, 7)  # the dataset's own 7 dimensions, unnormalised with its statistics
        low, high = np.asarray(stats.action_low), np.asarray(stats.action_high)
        assert np.all(actions >= low - 1e-5) and np.all(actions <= high + 1e-5)
    task = TaskInfo("s", 0, "t", "pick", "r", (0,) * 7, (1,) * 7, (0,) * 7, "libero_eef_axis_angle_gripper_qpos")
    with pytest.raises(UserError, match="-a dataset=NAME"):
        policy.reset(EpisodeContext("e9", task, 9))
    fixed = QDepthPolicy(QDepthPolicyConfig(checkpoint=str(checkpoint), dataset="fractal20220817_data"))
    fixed.reset(EpisodeContext("e9", task, 9))  # named: used whatever the suite's layout
    assert fixed.act(ObservationBatch(["e9"], {"main": image}, np.zeros((1, 8)), ["pick"])).shape == (1, 2, 7)


def torch_all_zero(values) -> bool:
    return bool((values == 0).all())
