"""The streaming training data pipeline: real DataLoader worker processes over real dataset files, every
sample of an epoch exactly once across ranks and workers, a mid-epoch resume in the same order, mixtures,
the errors a user meets, and the tiny QDepth-VLA trained through it."""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.datasets import depth as depth_cache
from qdepth_bench.datasets.libero_hdf5 import write_episodes
from qdepth_bench.models.qdepth.config import build_config
from qdepth_bench.models.qdepth.tokenizer import HashWordTokenizer
from qdepth_bench.train.data import make_train_loader, open_training_data
from qdepth_bench.train.recipe import load_recipe

LENGTHS = (5, 9, 7, 12, 6, 8, 10)  # uneven on purpose: streams are balanced by frames, not episodes


def libero_file(path: Path, lengths: tuple[int, ...] = LENGTHS, size: int = 32, seed: int = 0) -> Path:
    """A LIBERO-layout demonstration file with small upside-down frames; frame t of demo i holds i * 16 + t
    in the red channel of its top-left 4x4 block (as the policy sees it), so a sample names its frame."""
    rng = np.random.default_rng(seed)
    demos = []
    for i, n in enumerate(lengths):
        frames = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
        frames[:, -4:, -4:, 0] = (i * 16 + np.arange(n))[:, None, None]  # bottom-right as stored
        demos.append(
            {
                "actions": rng.normal(size=(n, 7)),
                "states": rng.normal(size=(n, 9)),
                "obs/agentview_rgb": frames,
                "obs/eye_in_hand_rgb": frames,
                "obs/ee_pos": rng.normal(size=(n, 3)),
                "obs/ee_ori": rng.normal(size=(n, 3)),
                "obs/gripper_states": rng.normal(size=(n, 2)),
            }
        )
    return write_episodes(path, demos, "put the bowl on the plate", "bowl.bddl")


def recipe_file(tmp_path: Path, data: dict, **train: object) -> Path:
    path = tmp_path / "recipe.json"
    settings = {"steps": 3, "batch_size": 3, "lr": 1e-3, "warmup_steps": 1, "log_every": 1, **train}
    recipe = {"name": "t", "out": str(tmp_path / "out"), "model": {"variant": "pi0"}, "data": data, "train": settings}
    path.write_text(json.dumps(recipe))
    return path


def loader_for(recipe_path: Path, rank: int = 0, world: int = 1, position: dict | None = None, **overrides):
    recipe = load_recipe(recipe_path, overrides)
    data = open_training_data(recipe)
    config = build_config("tiny", "pi0", state_dim=data.dims[0], action_dim=data.dims[1], chunk_size=2)
    return make_train_loader(recipe, data, config, HashWordTokenizer(), rank, world, position=position)


def ids_of(loader, batches: int) -> list[tuple[int, int, int]]:
    seen = []
    for _ in range(batches):
        loader.next()
        seen += loader.last_ids
    return seen


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory) -> Path:
    return libero_file(tmp_path_factory.mktemp("libero") / "bowl_demo.hdf5")


def test_two_ranks_two_workers_see_every_sample_once_per_epoch(demo_file, tmp_path):
    recipe = recipe_file(tmp_path, {"paths": [str(demo_file)], "shuffle_buffer": 4}, workers=2, batch_size=3)
    total = sum(LENGTHS)
    # each rank's two streams hold about total/4 frames, give or take one episode; take enough batches for
    # every stream to finish epoch 0 and begin epoch 1
    per_rank = 2 * ((total // 4 + max(LENGTHS)) // 3 + 2)
    seen = []
    for rank in (0, 1):
        loader = loader_for(recipe, rank, 2)
        seen += ids_of(loader, per_rank)
        loader.close()
    epoch0 = collections.Counter((entry, t) for epoch, entry, t in seen if epoch == 0)
    assert sorted(epoch0) == [(e, t) for e, n in enumerate(LENGTHS) for t in range(n)]
    assert set(epoch0.values()) == {1}  # none twice, none skipped
    assert any(epoch == 1 for epoch, _, _ in seen)
    # the shuffle buffer mixed frames: a stream's frames do not come out in file order
    first = [(e, t) for epoch, e, t in seen[:12] if epoch == 0]
    assert first != sorted(first)


def test_a_resumed_stream_continues_in_the_same_order(demo_file, tmp_path):
    recipe = recipe_file(tmp_path, {"paths": [str(demo_file)], "shuffle_buffer": 5}, workers=2, batch_size=4)
    whole = loader_for(recipe)
    uninterrupted = ids_of(whole, 14)  # 56 samples: past the end of epoch 0 (57 frames)
    whole.close()
    first = loader_for(recipe)
    before = ids_of(first, 5)  # stopped mid-epoch, after an odd number of batches (the other worker's turn)
    position = first.position()
    first.close()
    assert position["batches"] == 5
    second = loader_for(recipe, position=json.loads(json.dumps(position)))  # as a checkpoint stores it
    after = ids_of(second, 9)
    second.close()
    assert before + after == uninterrupted
    torch.manual_seed(0)
    state = torch.get_rng_state()
    loader_for(recipe, position=position).close()
    assert torch.equal(torch.get_rng_state(), state)  # the training's own random stream is left alone
    fewer = loader_for(recipe, position=position, **{"train.workers": 1})  # the same 2 streams, one worker
    assert ids_of(fewer, 9) == after
    fewer.close()
    with pytest.raises(UserError, match="resume with train.streams = 2"):
        loader_for(recipe, position=position, **{"train.streams": 4})


def test_samples_carry_the_frames_the_evaluation_sees(demo_file, tmp_path):
    """Frames come out rotated 180 degrees and resized to the model's 224 px; state and actions normalised
    with the dataset's statistics; the instruction from the file."""
    recipe = recipe_file(tmp_path, {"paths": [str(demo_file)], "shuffle_buffer": 1}, workers=0, batch_size=2)
    loader = loader_for(recipe)
    batch = loader.next()
    assert tuple(batch.images.shape) == (2, 3, 224, 224)
    red = np.round((batch.images[:, 0, 10, 10].numpy() + 1) * 127.5)  # inside the 4x4 block, scaled 7x
    assert red.tolist() == [entry * 16 + t for _, entry, t in loader.last_ids]
    assert float(batch.images.min()) >= -1.0 and float(batch.images.max()) <= 1.0
    assert batch.tokens.shape[0] == 2 and bool(batch.token_mask.any())
    assert float(batch.state.abs().max()) <= 1.0 and tuple(batch.actions.shape) == (2, 2, 7)
    assert loader.data_describe()["datasets"][0]["rotation"] == 180  # recorded with the checkpoint
    loader.close()


def test_a_mixture_weights_its_datasets_per_epoch(demo_file, tmp_path):
    other = libero_file(tmp_path / "other_demo.hdf5", lengths=(4, 4, 4, 4), seed=1)
    data = {
        "datasets": [{"paths": [str(demo_file)], "weight": 1.0}, {"paths": [str(other)], "weight": 0.5}],
        "shuffle_buffer": 3,
    }
    recipe = load_recipe(recipe_file(tmp_path, data))
    opened = open_training_data(recipe)
    assert len(opened.stats) == 2  # one normalisation per dataset, both recorded with the checkpoint
    assert [len(s["action_low"]) for s in opened.describe()["stats"]] == [7, 7]
    assert opened.stats[0].action_low != opened.stats[1].action_low
    from qdepth_bench.train.data import epoch_episodes

    for epoch in range(3):
        entries = [opened.entries[i] for i in epoch_episodes(opened, 0, epoch)]
        assert sum(e.spec == 0 for e in entries) == len(LENGTHS)  # weight 1: every episode once
        assert sum(e.spec == 1 for e in entries) == 2  # weight 0.5: half of the 4
    # through the stream: epoch 0 is every frame of the first dataset and of two episodes of the second
    loader = loader_for(recipe_file(tmp_path, data, batch_size=5))
    seen = [(entry, t) for epoch, entry, t in ids_of(loader, 14) if epoch == 0]
    loader.close()
    assert len(seen) == len(set(seen)) == sum(LENGTHS) + 2 * 4


def test_errors_name_the_file_and_the_fix(demo_file, tmp_path):
    missing = recipe_file(tmp_path, {"paths": [str(tmp_path / "nothing*.hdf5")]})
    with pytest.raises(UserError, match="no files match data path"):
        open_training_data(load_recipe(missing))
    copy = tmp_path / "copy_demo.hdf5"
    copy.write_bytes(demo_file.read_bytes())
    recipe = load_recipe(recipe_file(tmp_path, {"paths": [str(copy)]}))
    data = open_training_data(recipe)
    pixel = build_config("tiny", "qdepth-pixel", state_dim=8, action_dim=7, chunk_size=2)
    with pytest.raises(UserError, match=r"have no depth .*run `qdepth-bench depth annotate"):
        make_train_loader(recipe, data, pixel, HashWordTokenizer())
    depth_cache.write_demo(
        depth_cache.cache_path(copy), "demo_0", np.zeros((3, 224, 224), np.uint8), np.zeros((3, 2)), "sim"
    )
    for i, n in enumerate(LENGTHS[1:], start=1):
        depth_cache.write_demo(
            depth_cache.cache_path(copy), f"demo_{i}", np.zeros((n, 224, 224), np.uint8), np.zeros((n, 2)), "sim"
        )
    with pytest.raises(UserError, match=r"does not match .*demo_0 has 3 depth frames for 5"):
        make_train_loader(recipe, data, pixel, HashWordTokenizer())
    with pytest.raises(UserError, match="lower train.workers"):
        make_train_loader(
            load_recipe(recipe_file(tmp_path, {"paths": [str(copy)]}, workers=4)),
            data,
            pixel,
            HashWordTokenizer(),
            0,
            2,
        )


def test_depth_made_otherwise_than_the_recipe_says_is_refused(demo_file, tmp_path):
    """Codes from another VQ-VAE than the recipe's, and depth from another estimator than it names."""
    copy = tmp_path / "copy_demo.hdf5"
    copy.write_bytes(demo_file.read_bytes())
    cache = depth_cache.cache_path(copy)
    for i, n in enumerate(LENGTHS):
        depth_cache.write_demo(cache, f"demo_{i}", np.zeros((n, 224, 224), np.uint8), np.zeros((n, 2)), "sim")
        depth_cache.write_codes(cache, f"demo_{i}", np.zeros((n, 256), np.int64), "0123456789abcdef")
    vqvae = tmp_path / "vq"
    vqvae.mkdir()
    (vqvae / "model.safetensors").write_bytes(b"another codebook")
    recipe = load_recipe(recipe_file(tmp_path, {"paths": [str(copy)]}))
    data = open_training_data(recipe)
    tokens = build_config("tiny", "qdepth", state_dim=8, action_dim=7, chunk_size=2)
    with_vqvae = load_recipe(recipe_file(tmp_path, {"paths": [str(copy)]}), {"vqvae": str(vqvae)})
    with pytest.raises(UserError, match=r"made by another VQ-VAE \(0123456789abcdef\)"):
        make_train_loader(with_vqvae, data, tokens, HashWordTokenizer())
    make_train_loader(recipe, data, tokens, HashWordTokenizer()).close()  # no VQ-VAE named: nothing to compare
    pixel = build_config("tiny", "qdepth-pixel", state_dim=8, action_dim=7, chunk_size=2)
    vida = load_recipe(recipe_file(tmp_path, {"paths": [str(copy)], "depth_estimator": "vida"}))
    with pytest.raises(UserError, match=r"made by an unrecorded estimator, the recipe names vida"):
        make_train_loader(vida, data, pixel, HashWordTokenizer())


@pytest.mark.slow
def test_tiny_qdepth_trains_from_a_libero_file_through_the_pipeline(tmp_path):
    """Depth annotation (synthetic relative depth in the real cache), the VQ-VAE and its codes, then three
    steps of the tiny QDepth-VLA with one DataLoader worker; the log says how long the steps waited for data."""
    from qdepth_bench.train.policy import train_policy
    from qdepth_bench.train.vqvae import encode_dataset, train_vqvae

    demos = libero_file(tmp_path / "bowl_demo.hdf5", lengths=(6, 5, 7))
    rng = np.random.default_rng(0)
    for i, n in enumerate((6, 5, 7)):
        relative = rng.integers(0, 255, (n, 224, 224), dtype=np.uint8)
        depth_cache.write_demo(depth_cache.cache_path(demos), f"demo_{i}", relative, np.zeros((n, 2)), "sim")
    vq = tmp_path / "vq.json"
    vq.write_text(
        json.dumps(
            {
                "kind": "vqvae",
                "out": str(tmp_path / "vq"),
                "data": {"paths": [str(demos)]},
                "model": {"overrides": {"hidden": 8}},
                "train": {"steps": 2, "batch_size": 2},
            }
        )
    )
    train_vqvae(load_recipe(vq))
    encode_dataset(demos, tmp_path / "vq")
    recipe = recipe_file(tmp_path, {"paths": [str(demos)], "shuffle_buffer": 8}, workers=1, steps=3, batch_size=2)
    spec = json.loads(recipe.read_text())
    spec["model"] = {"size": "tiny", "variant": "qdepth", "overrides": {"chunk_size": 2}}
    spec["vqvae"] = str(tmp_path / "vq")
    recipe.write_text(json.dumps(spec))
    checkpoint = train_policy(load_recipe(recipe))
    rows = list(csv.DictReader((tmp_path / "out" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert all(float(r["depth"]) > 0 and 0.0 <= float(r["data_wait"]) <= 1.0 for r in rows)
    meta = json.loads((checkpoint / "config.json").read_text())
    assert meta["data"]["datasets"][0]["resize"] == "bilinear" and meta["data"]["frames"] == 18
    trainer = tmp_path / "out" / "checkpoint" / "trainer.json"
    assert json.loads(trainer.read_text())["data_position"]["batches"] == 3
    train_policy(load_recipe(recipe, {"train.steps": 5}), resume=True)  # the stream continues at batch 3
    rows = list(csv.DictReader((tmp_path / "out" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert json.loads(trainer.read_text())["data_position"]["batches"] == 5
    # the same five steps without the stop: the same data and noise, so the same weights bit for bit
    straight = train_policy(load_recipe(recipe, {"train.steps": 5, "out": str(tmp_path / "straight")}))
    assert (straight / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
