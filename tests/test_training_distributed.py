"""Sharded training (FSDP2) proven with CPU processes (gloo): two ranks sharing a global batch train the
same model as one process with the whole batch; a training killed during or after a checkpoint write
resumes to the uninterrupted run's weights bit for bit; a checkpoint of two ranks continues on one."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from qdepth_bench.datasets import depth as depth_cache
from qdepth_bench.models.qdepth.checkpoint import load_checkpoint

STEPS, LR = 3, 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """A LIBERO-format file of two short random demos with depth and depth codes, and a VQ-VAE (random
    weights) whose codebook the depth-token head scores against: everything a qdepth recipe reads."""
    from safetensors.torch import save_file

    from qdepth_bench.core.hashing import file_hash
    from qdepth_bench.datasets.libero_hdf5 import write_episodes
    from qdepth_bench.models.vqvae import DepthVQVAE, VQVAEConfig

    root = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    demos = []
    for _ in range(2):
        t = 10
        demos.append(
            {
                "actions": rng.uniform(-1, 1, (t, 7)),
                "states": rng.normal(size=(t, 9)),
                "obs/ee_pos": rng.normal(size=(t, 3)),
                "obs/ee_ori": rng.normal(size=(t, 3)),
                "obs/gripper_states": rng.normal(size=(t, 2)),
                "obs/agentview_rgb": rng.integers(0, 255, (t, 32, 32, 3), dtype=np.uint8),
            }
        )
    dataset = write_episodes(root / "task_demo.hdf5", demos, "pick up the soup", "none.bddl")
    vqvae = root / "vq"
    vqvae.mkdir()
    torch.manual_seed(0)
    config = VQVAEConfig(hidden=16)
    save_file({k: v.contiguous() for k, v in DepthVQVAE(config).state_dict().items()}, str(vqvae / "model.safetensors"))
    (vqvae / "config.json").write_text(json.dumps({"vqvae": config.to_dict()}))
    cache = depth_cache.cache_path(dataset)
    for i in range(2):
        depth_cache.write_demo(
            cache, f"demo_{i}", rng.integers(0, 255, (10, 224, 224), dtype=np.uint8), np.ones((10, 2)), "synthetic"
        )
        # random codes, recorded as this VQ-VAE's (training refuses codes of another)
        codes = rng.integers(0, 256, (10, 256))
        depth_cache.write_codes(cache, f"demo_{i}", codes, file_hash(vqvae / "model.safetensors"))
    return dataset, vqvae


def recipe_file(folder: Path, data: tuple[Path, Path], variant: str, **train: object) -> Path:
    recipe = {
        "name": f"dist-{variant}",
        "kind": "policy",
        "out": str(folder / "out"),
        "model": {"size": "tiny", "variant": variant, "overrides": {"chunk_size": 4}},
        "data": {"format": "libero_hdf5", "paths": [str(data[0])]},
        "vqvae": str(data[1]),
        # two data streams: the data order (and so each step's global batch) is the same on 1 and 2 ranks
        "train": {
            "steps": STEPS,
            "global_batch": 4,
            "lr": LR,
            "warmup_steps": 2,
            "log_every": 1,
            "streams": 2,
            **train,
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


def train_command(recipe: Path, processes: int, *extra: str) -> list[str]:
    """`qdepth-bench train policy` as one process, or under torchrun as several (the documented launch)."""
    launch = [sys.executable, "-m", "qdepth_bench"]
    if processes > 1:
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_port",
            str(_free_port()),
            "-m",
            "qdepth_bench",
        ]
    return [*launch, "train", "policy", "--recipe", str(recipe), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train(recipe: Path, processes: int, *extra: str) -> None:
    command = train_command(recipe, processes, *extra)
    result = subprocess.run(command, cwd=recipe.parent, capture_output=True, text=True, timeout=600, env=ENV)
    errors = [line for line in result.stderr.splitlines() if "Error" in line or "error:" in line]
    assert result.returncode == 0, "\n".join(errors[-20:]) or result.stderr[-4000:]


def log_rows(out: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader((out / "log.csv").open())]


def weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "policy" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["qdepth", "qdepth-pixel", "pi0"])
def test_two_ranks_train_the_model_one_process_trains(data, tmp_path, variant):
    # the same micro-batch (the data stream's block), one process accumulating 4 of them, 2 ranks 2 each
    one = recipe_file(tmp_path / "one", data, variant, batch_size=1)
    two = recipe_file(tmp_path / "two", data, variant, batch_size=1)
    train(one, 1)
    train(two, 2)
    rows = {n: log_rows(tmp_path / n / "out") for n in ("one", "two")}
    assert [r["step"] for r in rows["two"]] == list(range(STEPS))
    for a, b in zip(rows["one"], rows["two"], strict=True):
        for key in ("total", "flow", "depth", "grad_norm"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), (key, a, b)
    assert (rows["one"][0]["depth"] > 0) == (variant != "pi0")
    first, second = weights(tmp_path / "one" / "out"), weights(tmp_path / "two" / "out")
    assert first.keys() == second.keys()
    for name in first:
        # SigLIP's key biases have an exact gradient of zero (softmax ignores a constant added to a row of
        # logits): AdamW scales their float round-off to steps of about lr, different per summation order
        tolerance = STEPS * LR if name.endswith("k_proj.bias") else 1e-5
        torch.testing.assert_close(first[name], second[name], atol=tolerance, rtol=0, msg=name)
    meta = json.loads((tmp_path / "two" / "out" / "checkpoint" / "trainer.json").read_text())
    assert (meta["world"], meta["micro_batch"], meta["accumulation"], meta["global_batch"]) == (2, 1, 2, 4)
    assert meta["precision"] == "fp32" and meta["sharding"] == "fsdp2"


def _kill_when(recipe: Path, processes: int, ready, *extra: str) -> None:
    """Start a training and SIGKILL all its processes (as a machine that stops) once `ready()` holds."""
    process = subprocess.Popen(
        train_command(recipe, processes, *extra),
        cwd=recipe.parent,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert process.poll() is None, "the training ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _checkpointed_step(out: Path) -> int:
    meta = out / "checkpoint" / "trainer.json"
    try:
        return int(json.loads(meta.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_killed_training_resumes_bit_for_bit_and_on_another_world_size(data, tmp_path):
    steps = 4
    straight = recipe_file(tmp_path / "straight", data, "qdepth", batch_size=2, steps=steps, checkpoint_every=1)
    killed = recipe_file(tmp_path / "killed", data, "qdepth", batch_size=2, steps=steps, checkpoint_every=1)
    train(straight, 2)
    out = killed.parent / "out"
    # killed while writing the checkpoint of step 2 (step 1's is complete), then resumed
    _kill_when(killed, 2, lambda: _checkpointed_step(out) >= 1 and (out / "checkpoint.partial").exists())
    assert _checkpointed_step(out) in (1, 2)
    # killed again just after a checkpoint was written
    _kill_when(killed, 2, lambda: _checkpointed_step(out) >= 3, "--resume")
    train(killed, 2, "--resume")
    assert weights(out).keys() == weights(straight.parent / "out").keys()
    for name, tensor in weights(out).items():
        assert torch.equal(tensor, weights(straight.parent / "out")[name]), name
    assert log_rows(out) == [
        {**r, "samples_per_s": s["samples_per_s"], "data_wait": s["data_wait"], "elapsed_s": s["elapsed_s"]}
        for r, s in zip(log_rows(straight.parent / "out"), log_rows(out), strict=True)
    ]
    # the two-rank checkpoint continues on one process, as on two
    for processes, recipe in ((1, killed), (2, straight)):
        train(recipe, processes, "--resume", "--set", f"train.steps={steps + 1}")
    resumed = {n: log_rows(tmp_path / n / "out")[-1] for n in ("killed", "straight")}
    assert resumed["killed"]["step"] == steps
    for key in ("total", "flow", "depth", "grad_norm"):
        assert resumed["killed"][key] == pytest.approx(resumed["straight"][key], abs=1e-5)
    for name, tensor in weights(out).items():
        torch.testing.assert_close(tensor, weights(straight.parent / "out")[name], atol=1e-5, rtol=0, msg=name)
    # the policy folder, exported again on request from the (two-rank) checkpoint on one process
    before = weights(out)
    shutil.rmtree(out / "policy")
    train(killed, 1, "--export")
    assert all(torch.equal(tensor, before[name]) for name, tensor in weights(out).items())
    assert load_checkpoint(out / "policy").model.config.size == "tiny"


def test_activation_checkpointing_recomputes_the_same_gradients():
    from qdepth_bench.models.qdepth.config import build_config
    from qdepth_bench.models.qdepth.model import Batch, QDepthVLA

    torch.manual_seed(0)
    model = QDepthVLA(build_config("tiny", "qdepth", chunk_size=4))
    c = model.config
    g = torch.Generator().manual_seed(1)
    batch = Batch(
        torch.rand(2, 3, 224, 224, generator=g) * 2 - 1,
        torch.randint(3, 50, (2, c.max_text_tokens), generator=g),
        torch.ones(2, c.max_text_tokens, dtype=torch.bool),
        torch.randn(2, c.state_dim, generator=g),
        torch.randn(2, 4, c.action_dim, generator=g),
        torch.randint(0, c.codebook_size, (2, c.num_image_tokens), generator=g),
    )
    noise, tau = torch.randn(2, 4, c.action_dim, generator=g), torch.rand(2, generator=g)
    grads = []
    for on in (False, True):
        model.zero_grad()
        model.mot.set_checkpointing(on)
        model.total_loss(model(batch, noise, tau), 0).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


@pytest.mark.slow
def test_bf16_with_activation_checkpointing_trains_and_exports_fp32(data, tmp_path):
    recipe = recipe_file(tmp_path, data, "qdepth", batch_size=2, steps=2, precision="bf16")
    train(recipe, 1, "--set", "train.activation_checkpointing=true")
    rows = log_rows(tmp_path / "out")
    assert len(rows) == 2 and all(np.isfinite(r["total"]) and r["depth"] > 0 for r in rows)
    meta = json.loads((tmp_path / "out" / "checkpoint" / "trainer.json").read_text())
    assert meta["precision"] == "bf16" and meta["activation_checkpointing"] is True
    assert all(t.dtype == torch.float32 for t in weights(tmp_path / "out").values())  # fp32 master weights


def test_an_interrupt_during_the_checkpoint_write_is_the_interrupted_exit_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DCP wraps what a rank raised (a SIGTERM's KeyboardInterrupt) in its CheckpointException: the trainer
    turns it back into the interrupt the CLI exits 130 on, and the checkpoint written before stays whole."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException, _wrap_exception

    from qdepth_bench.train.checkpoint import CHECKPOINT, save_training_state
    from qdepth_bench.train.distributed import Distributed

    class Lone(Distributed):
        def barrier(self) -> None:
            """One process: nothing to wait for."""

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    info = Lone(0, 1, torch.device("cpu"), owns_group=False)
    written = tmp_path / CHECKPOINT
    written.mkdir()
    (written / "kept").write_text("the last checkpoint")

    def interrupted(*args: object, **kwargs: object) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as error:
            raise CheckpointException("write failed", {0: _wrap_exception(error)}) from None

    monkeypatch.setattr(dcp, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(tmp_path, model, optimizer, scheduler, {}, info)
    assert (written / "kept").read_text() == "the last checkpoint"

    def failed(*args: object, **kwargs: object) -> None:
        raise CheckpointException("disk", {0: _wrap_exception(OSError("disk full"))})

    monkeypatch.setattr(dcp, "save", failed)
    with pytest.raises(CheckpointException):
        save_training_state(tmp_path, model, optimizer, scheduler, {}, info)
