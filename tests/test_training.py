"""The training side on data the project makes itself: LIBERO demonstration files recorded from the real
simulator, ground-truth depth by restoring their states, a monocular-estimator annotation, the depth
VQ-VAE, and co-training (with resume; several processes in test_training_distributed.py). LeRobot and RLDS
reading: test_dataset_formats.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli_subprocess

from qdepth_bench.datasets import depth as depth_cache


def record_demos(path: Path, n_demos: int = 2, steps: int = 12) -> Path:
    """A small LIBERO-format file: random-action demos of libero_object task 0, states included."""
    from qdepth_bench.core.policy import PolicyRequirements
    from qdepth_bench.datasets.libero_hdf5 import write_episodes
    from qdepth_bench.registry.sims import make_backend
    from qdepth_bench.registry.suites import suite_registry

    backend = make_backend(suite_registry().suites["libero_object"])
    env = backend.make_env(0, PolicyRequirements(cameras=("main", "wrist")))
    rng = np.random.default_rng(0)
    demos = []
    try:
        for episode in backend.episodes([0], n_demos, 7):
            env.reset(episode)
            rows, actions = [], []
            for _ in range(steps):
                action = np.concatenate([rng.uniform(-0.5, 0.5, 6), [rng.choice([-1.0, 1.0])]])
                rows.append(env.demo_frame())
                actions.append(action)
                env.step(action)
            demo = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
            demo["actions"] = np.asarray(actions, dtype=np.float64)
            demos.append(demo)
    finally:
        env.close()
    task = backend.suite.get_task(0)
    return write_episodes(path, demos, task.language, task.bddl_file)


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory) -> Path:
    return record_demos(tmp_path_factory.mktemp("demos") / "task0_demo.hdf5")


@pytest.mark.slow
def test_demo_file_reads_back_like_the_evaluation_sees_it(demo_file):
    from qdepth_bench.core.policy import PolicyRequirements
    from qdepth_bench.datasets.libero_hdf5 import read_episodes
    from qdepth_bench.registry.sims import make_backend
    from qdepth_bench.registry.suites import suite_registry

    episodes = list(read_episodes(demo_file))
    assert len(episodes) == 2 and episodes[0].instruction.startswith("pick up the alphabet soup")
    first = episodes[0]
    assert first.images["main"].shape == (12, 224, 224, 3) and first.state.shape == (12, 8)
    assert first.actions.shape == (12, 7) and first.sim_states is not None
    # restoring a recorded state renders the frame the file holds, in the policy's orientation
    backend = make_backend(suite_registry().suites["libero_object"])
    env = backend.make_env(0, PolicyRequirements(cameras=("main",)))
    try:
        restored = env.restore(first.sim_states[5])
    finally:
        env.close()
    diff = np.abs(restored.images["main"][0].astype(int) - first.images["main"][5].astype(int)).mean()
    assert diff < 2.0
    # proprio observables of a step are read mid-control-loop; recomputed from the restored state they agree
    # to a few millimetres / milliradians
    np.testing.assert_allclose(restored.state[0], first.state[5], atol=5e-3)


@pytest.mark.slow
def test_sim_depth_annotation_is_metric_cached_and_resumable(demo_file, tmp_path):
    result = run_cli_subprocess("depth", "annotate", str(demo_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "annotated 2 demos (24 frames)" in result.stdout
    cache = depth_cache.cache_path(demo_file)
    relative = depth_cache.read_relative(cache, "demo_0")
    assert relative.shape == (12, 224, 224) and 0.0 <= relative.min() and relative.max() <= 1.0
    import h5py

    with h5py.File(cache) as f:
        ranges = f["demo_0"]["range_m"][()]
    assert np.all(ranges[:, 0] > 0.05) and np.all(ranges[:, 1] < 10) and np.all(ranges[:, 1] > ranges[:, 0])
    again = run_cli_subprocess("depth", "annotate", str(demo_file), cwd=tmp_path)
    assert "annotated 0 demos" in again.stdout and "skipped 2" in again.stdout


@pytest.mark.slow
def test_monocular_estimator_annotation_from_a_local_model_folder(demo_file, tmp_path):
    """A Depth Anything model (tiny, random weights, made here) through transformers' pipeline."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

    folder = tmp_path / "depth-anything-tiny"
    backbone = {
        "model_type": "dinov2",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 56,
        "patch_size": 14,
        "out_features": ["stage1", "stage2"],
        "reshape_hidden_states": False,
    }
    config = DepthAnythingConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[16, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        reassemble_factors=[2, 1],
        reassemble_hidden_size=32,
    )
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=False).save_pretrained(folder)
    copy = tmp_path / "demos.hdf5"
    copy.write_bytes(demo_file.read_bytes())
    result = run_cli_subprocess(
        "depth", "annotate", str(copy), "--source", "model", "--model", str(folder), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    relative = depth_cache.read_relative(depth_cache.cache_path(copy), "demo_1")
    assert relative.shape == (12, 224, 224)
    bad = run_cli_subprocess(
        "depth", "annotate", str(copy), "--source", "model", "--model", str(tmp_path), cwd=tmp_path
    )
    assert bad.returncode == 2 and "not a transformers model folder" in bad.stderr


def synthetic_depth(n: int, seed: int = 0) -> np.ndarray:
    """Table-top-like relative depth: a sloped floor with a few boxes nearer the camera."""
    rng = np.random.default_rng(seed)
    ys = np.linspace(0, 1, 224)[:, None]
    frames = np.repeat((0.4 + 0.5 * ys * np.ones((1, 224)))[None], n, axis=0)
    for frame in frames:
        for _ in range(rng.integers(1, 4)):
            y, x, h, w = rng.integers(20, 180, 2).tolist() + rng.integers(15, 45, 2).tolist()
            frame[y : y + h, x : x + w] = rng.uniform(0.1, 0.4)
    return np.round(frames * 255).astype(np.uint8)


def test_vqvae_trains_uses_its_codebook_and_encodes(tmp_path):
    from qdepth_bench.train.recipe import load_recipe
    from qdepth_bench.train.vqvae import encode_dataset, train_vqvae

    dataset = tmp_path / "synthetic.hdf5"
    dataset.write_bytes(b"")  # the depth cache sits beside a dataset file
    cache = depth_cache.cache_path(dataset)
    for i in range(4):
        depth_cache.write_demo(cache, f"demo_{i}", synthetic_depth(40, seed=i), np.zeros((40, 2)), "synthetic")
    recipe_file = tmp_path / "vq.yaml"
    recipe_file.write_text(
        json.dumps(
            {
                "kind": "vqvae",
                "out": str(tmp_path / "vq"),
                "data": {"paths": [str(dataset)]},
                "model": {"overrides": {"hidden": 32, "dead_after": 10}},
                "train": {"steps": 120, "batch_size": 8, "lr": 1e-3, "log_every": 20},
            }
        )
    )
    out = train_vqvae(load_recipe(recipe_file))
    rows = list(csv.DictReader((out / "log.csv").open()))
    first, last = float(rows[0]["reconstruction"]), float(rows[-1]["reconstruction"])
    assert last < first / 3, (first, last)
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["codes_used"] >= 16 and evaluation["perplexity"] > 8
    assert int(rows[-1]["restarted"]) > 0  # dead codes were brought back
    assert encode_dataset(dataset, out) == 160
    codes = depth_cache.read_codes(cache, "demo_0")
    assert codes.shape == (40, 256) and codes.max() < 256
    assert encode_dataset(dataset, out) == 0  # already encoded by this VQ-VAE


def co_training_recipe(tmp_path: Path, demo_file: Path, variant: str, vqvae: Path | None, steps: int) -> Path:
    recipe = {
        "name": f"test-{variant}",
        "kind": "policy",
        "out": str(tmp_path / variant),
        "model": {"size": "tiny", "variant": variant, "overrides": {"chunk_size": 4}},
        "data": {"format": "libero_hdf5", "paths": [str(demo_file)]},
        "train": {
            "steps": steps,
            "batch_size": 2,
            "global_batch": 4,
            "lr": 1e-3,
            "warmup_steps": 2,
            "log_every": 1,
            "checkpoint_every": 3,
        },
    }
    if vqvae is not None:
        recipe["vqvae"] = str(vqvae)
    path = tmp_path / f"{variant}.yaml"
    path.write_text(json.dumps(recipe))
    return path


@pytest.mark.slow
def test_co_training_checkpoints_resumes_and_loads_as_a_policy(demo_file, tmp_path):
    from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, TaskInfo
    from qdepth_bench.registry.policies import make_policy

    assert run_cli_subprocess("depth", "annotate", str(demo_file), cwd=tmp_path).returncode == 0
    vq_recipe = tmp_path / "vq.yaml"
    vq_recipe.write_text(
        json.dumps(
            {
                "kind": "vqvae",
                "out": str(tmp_path / "vq"),
                "data": {"paths": [str(demo_file)]},
                "model": {"overrides": {"hidden": 16}},
                "train": {"steps": 5, "batch_size": 4, "log_every": 1},
            }
        )
    )
    for args in (
        ["train", "vqvae", "--recipe", str(vq_recipe)],
        ["depth", "encode", str(demo_file), "--vqvae", str(tmp_path / "vq")],
    ):
        result = run_cli_subprocess(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr

    recipe = co_training_recipe(tmp_path, demo_file, "qdepth", tmp_path / "vq", steps=6)
    first = run_cli_subprocess("train", "policy", "--recipe", str(recipe), "--set", "train.steps=3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_cli_subprocess("train", "policy", "--recipe", str(recipe), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    log = list(csv.DictReader((tmp_path / "qdepth" / "log.csv").open()))
    assert [int(r["step"]) for r in log] == list(range(6))  # steps 0-2, then 3-5 after the resume
    assert all(np.isfinite(float(r["flow"])) and float(r["depth"]) > 0 for r in log)
    elapsed = [float(r["elapsed_s"]) for r in log]  # step time keeps counting across the resume
    assert elapsed == sorted(elapsed) and elapsed[3] > elapsed[2]
    assert float(log[0]["depth_weight"]) == pytest.approx(0.01)
    exported = json.loads((tmp_path / "qdepth" / "policy" / "config.json").read_text())
    assert exported["step"] == 6 and exported["variant"] == "qdepth" and len(exported["data_hash"]) == 16
    assert exported["training"]["world"] == 1 and exported["training"]["global_batch"] == 4
    config_file = tmp_path / "qdepth" / "checkpoint" / "trainer.json"
    meta = json.loads(config_file.read_text())
    assert meta["step"] == 6 and meta["data_hash"] == exported["data_hash"]
    # a resume whose data differs from the checkpoint's is refused, the checkpoint left as it was
    config_file.write_text(json.dumps({**meta, "data_hash": "0" * 16}))
    changed = run_cli_subprocess(
        "train", "policy", "--recipe", str(recipe), "--resume", "--set", "train.steps=8", cwd=tmp_path
    )
    assert changed.returncode != 0 and "changed since" in changed.stderr
    config_file.write_text(json.dumps(meta))

    policy = make_policy("qdepth", {"checkpoint": str(tmp_path / "qdepth" / "policy")})
    task = TaskInfo("libero_object", 0, "t", "pick up the soup", "panda", (-1,) * 7, (1,) * 7, (0,) * 7, "libero")
    policy.reset(EpisodeContext("k", task, 0))
    chunk = policy.act(
        ObservationBatch(["k"], {"main": np.zeros((1, 224, 224, 3), np.uint8)}, np.zeros((1, 8)), ["pick up the soup"])
    )
    assert chunk.shape == (1, 4, 7) and np.isfinite(chunk).all()

    figure = run_cli_subprocess(
        "figure",
        "depth",
        "--checkpoint",
        str(tmp_path / "qdepth" / "policy"),
        "--data",
        str(demo_file),
        "--out",
        str(tmp_path / "depth.png"),
        cwd=tmp_path,
    )
    assert figure.returncode == 0, figure.stderr
    assert (tmp_path / "depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    pi0 = co_training_recipe(tmp_path, demo_file, "pi0", None, steps=2)
    result = run_cli_subprocess("train", "policy", "--recipe", str(pi0), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert float(json.loads((tmp_path / "pi0" / "metrics.json").read_text())["depth"]) == 0.0  # no depth branch


def test_recipe_errors_are_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"kind": "policy", "out": str(tmp_path / "o"), "data": {"paths": ["nothing/*.hdf5"]}}))
    result = run_cli_subprocess("train", "policy", "--recipe", str(recipe), cwd=tmp_path)
    assert result.returncode == 2 and "no files match data path" in result.stderr
    result = run_cli_subprocess("train", "vqvae", "--recipe", str(recipe), cwd=tmp_path)
    assert result.returncode == 2 and "is a policy recipe" in result.stderr
    result = run_cli_subprocess("train", "policy", "--recipe", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_shipped_recipes_are_valid():
    from qdepth_bench.models.qdepth.config import build_config
    from qdepth_bench.registry.content import builtin_root
    from qdepth_bench.train.recipe import load_recipe

    recipes = sorted((builtin_root() / "training").glob("*.yaml"))
    assert len(recipes) >= 5
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.train.accumulation(1) >= 1
        if recipe.kind == "policy":
            build_config(
                recipe.model.get("size", "tiny"),
                recipe.model.get("variant", "qdepth"),
                **recipe.model.get("overrides", {}),
            )
    paper = load_recipe("qdepth-paper-libero").train  # the paper: 8 GPUs x 32 per GPU x 4 accumulation steps
    assert (paper.global_batch, paper.batch_size, paper.accumulation(8)) == (1024, 32, 4)
