"""Checkpoints of other pi0 implementations load into the project's model with their math intact: parity
with the reference code's own outputs (tests/data/open_pi_zero_tiny, made by running open-pi-zero), strict
key checks that name what is wrong, and full-size key completeness against the reference's key list."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import db_rows, run_cli_subprocess

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import file_hash, stable_hash
from qdepth_bench.models.qdepth.formats import (
    check_against_model,
    checkpoint_format,
    infer_config,
    load_foreign_model,
    rename_state,
)
from qdepth_bench.models.qdepth.model import Batch, QDepthVLA

FIXTURE = Path(__file__).parent / "data" / "open_pi_zero_tiny"
N_IMAGE = 4
#: the fixture's reduced head layout and the non-default conventions it was made with (config.yaml there)
TINY = {"head_dim": 16, "vision_heads": 2, "time_max_period": 100.0, "action_rope_theta": 100.0, "max_text_tokens": 6}


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE / "io.pt", weights_only=True)


def _batch(io: dict[str, torch.Tensor]) -> Batch:
    """The reference's [image tokens | text | padding] ids as the project's image + text-token inputs."""
    return Batch(
        io["pixel_values"],
        io["input_ids"][:, N_IMAGE:],
        io["attention_mask"][:, N_IMAGE:].bool(),
        io["proprios"][:, 0],
        actions=io["target_actions"],
    )


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save({"cnt_update": 0, "model": state}, path)
    return path


def _state() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE / "step0.pt", weights_only=True)["model"]


def test_open_pi_zero_actions_and_loss_match_the_reference(reference):
    model, config = load_foreign_model(FIXTURE / "step0.pt", "open-pi-zero", TINY)
    assert (config.velocity, config.time_first, config.positions) == ("data_minus_noise", True, "per_expert")
    batch = _batch(reference)
    for reuse_prefix in (True, False):
        actions = model.sample_actions(batch, noise=reference["noise"], reuse_prefix=reuse_prefix)
        assert torch.allclose(actions, reference["actions"], atol=1e-5, rtol=0)
        assert torch.allclose(actions, reference["actions_naive"], atol=1e-5, rtol=0)
    with torch.no_grad():
        loss = model.losses(batch, noise=reference["loss_noise"], tau=reference["t"])["flow"]
    assert abs(float(loss) - float(reference["loss"])) < 1e-5


@pytest.mark.parametrize(
    "field, value",
    [("time_first", False), ("expert_input_scale", False), ("attn_softcap", None), ("action_rope_theta", None)],
)
def test_each_convention_changes_the_actions(reference, field, value):
    """The parity above is not vacuous: dropping any one of open-pi-zero's conventions moves the actions."""
    model, _ = load_foreign_model(FIXTURE / "step0.pt", "open-pi-zero", {**TINY, field: value})
    actions = model.sample_actions(_batch(reference), noise=reference["noise"])
    assert (actions - reference["actions"]).abs().max() > 1e-3


def test_compiled_prefix_is_stripped(tmp_path, reference):
    """A checkpoint saved from a torch.compile'd model prefixes every key with `_orig_mod.`."""
    path = _save({f"_orig_mod.{k}": v for k, v in _state().items()}, tmp_path / "step1.pt")
    model, _ = load_foreign_model(path, "open-pi-zero", TINY)
    actions = model.sample_actions(_batch(reference), noise=reference["noise"])
    assert torch.allclose(actions, reference["actions"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.update({"extra_head.weight": torch.zeros(2)}), "does not map: extra_head.weight"),
        (lambda s: s.pop("action_decoder.bias"), "lacks weights the model needs: action_out.bias"),
        (lambda s: s.update({"action_encoder.linear_3.bias": torch.zeros(5)}), "action_time.2.bias (5,) vs (16,)"),
        (
            lambda s: s.update(
                {
                    "joint_model.mixtures.proprio.norm.weight": s["joint_model.mixtures.proprio.norm.weight"] + 1,
                }
            ),
            "untied mixtures are not supported",
        ),
    ],
)
def test_what_cannot_load_is_refused_by_name(tmp_path, change, message):
    state = _state()
    change(state)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_foreign_model(_save(state, tmp_path / "bad.pt"), "open-pi-zero", TINY)


def test_a_damaged_file_is_one_line(tmp_path):
    path = tmp_path / "step0.pt"
    path.write_bytes((FIXTURE / "step0.pt").read_bytes()[:5000])
    with pytest.raises(UserError, match="cannot be read as a torch checkpoint") as info:
        load_foreign_model(path, "open-pi-zero", TINY)
    assert "\n" not in str(info.value)


OPENPI = FIXTURE.parent / "openpi_pi0"
#: the openpi fixture's reduced head layout, chunk and prompt length (its make_fixture.py)
OPENPI_TINY = {"head_dim": 16, "vision_heads": 2, "chunk_size": 5, "max_text_tokens": 6}


def _openpi_batch(io: dict[str, torch.Tensor]) -> Batch:
    """Three cameras (the third masked, as openpi pads a missing one), prompts of two lengths, 32-dim state."""
    return Batch(
        io["images"],
        io["tokens"],
        io["token_mask"],
        io["state"],
        actions=io["target_actions"],
        image_masks=io["image_masks"],
    )


def test_openpi_pi0_actions_and_loss_match_the_reference():
    """openpi's PyTorch pi0, saved as its trainer saves (tied embeddings written once, as lm_head)."""
    io = torch.load(OPENPI / "io.pt", weights_only=True)
    model, config = load_foreign_model(OPENPI, "openpi-pi0", OPENPI_TINY)
    assert (config.time_input, config.state_dim, config.action_expert.hidden_size) == ("one_minus_tau", 32, 32)
    batch = _openpi_batch(io)
    for reuse_prefix in (True, False):
        actions = model.sample_actions(batch, noise=io["noise"], reuse_prefix=reuse_prefix)
        assert torch.allclose(actions, io["actions"], atol=1e-5, rtol=0)
    with torch.no_grad():
        loss = model.losses(batch, noise=io["loss_noise"], tau=1 - io["time"])["flow"]
    assert abs(float(loss) - float(io["loss"].mean())) < 1e-5


@pytest.mark.parametrize("field, value", [("time_input", "tau"), ("time_float64", False)])
def test_each_openpi_convention_changes_the_actions(field, value):
    io = torch.load(OPENPI / "io.pt", weights_only=True)
    model, _ = load_foreign_model(OPENPI, "openpi-pi0", {**OPENPI_TINY, field: value})
    actions = model.sample_actions(_openpi_batch(io), noise=io["noise"])
    assert (actions - io["actions"]).abs().max() > 1e-5


def test_a_masked_camera_is_not_seen():
    """openpi pads a missing camera with a masked image: what it shows must not change the actions."""
    io = torch.load(OPENPI / "io.pt", weights_only=True)
    model, _ = load_foreign_model(OPENPI, "openpi-pi0", OPENPI_TINY)
    batch = _openpi_batch(io)
    batch.images = batch.images.clone()
    batch.images[:, 2] = torch.rand_like(batch.images[:, 2])
    assert torch.allclose(model.sample_actions(batch, noise=io["noise"]), io["actions"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "fmt, folder, sizes",
    [
        ("open-pi-zero", "open_pi_zero_tiny", (2048, 18, 27, 1024, 7, 7)),
        ("openpi-pi0", "openpi_pi0", (2048, 18, 27, 1024, 32, 32)),
    ],
)
def test_full_size_keys_load_strictly(fmt, folder, sizes):
    """Every key of a reference's released configuration (listed by the reference code on the meta device)
    lands in the full-size model, and every model key is filled but those the format declares unused."""
    path = FIXTURE.parent / folder / "full_keys.json"
    keys = json.loads(path.read_text())
    state = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    spec = checkpoint_format(fmt)
    renamed = rename_state(spec, state, path)
    config = infer_config(spec, renamed, path, {})
    found = (
        config.text.hidden_size,
        config.text.num_hidden_layers,
        config.vision.num_hidden_layers,
        config.action_expert.hidden_size,
        config.state_dim,
        config.action_dim,
    )
    assert found == sizes
    with torch.device("meta"):
        model = QDepthVLA(config)
    expected = model.state_dict()
    check_against_model(spec, renamed, expected, path)
    unfilled = sorted(set(expected) - set(renamed))
    assert unfilled == (["mot.norms.0.weight"] if fmt == "open-pi-zero" else [])
    ignored = [k for k in keys if re.fullmatch(r".*lm_head\.weight|joint_model\.mixtures\.proprio\..+", k)]
    assert len(renamed) == len(keys) - len(ignored)


#: the tiny fixture through the real CLI: its reduced layout and prompt length, the project's offline tokenizer
TINY_MODEL_ARG = (
    "model={tokenizer: hash, max_text_tokens: 6, head_dim: 16, vision_heads: 2, time_max_period: 100.0, "
    "action_rope_theta: 100.0}"
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mani_skill") is None, reason="mani-skill is not installed")
def test_open_pi_zero_checkpoint_runs_simpler_widowx_through_the_cli(tmp_path):
    """The open-pi-zero family's policy on real ManiSkill3 WidowX episodes: recorded under its own name, an
    identity covering weights and statistics, its Lanczos resizing as a recorded (standard) protocol
    override, and its 4-step chunks."""
    db = tmp_path / "r.sqlite"
    statistics = FIXTURE / "statistics.json"
    args = ["--policy", "open-pi-zero-bridge", "--checkpoint", str(FIXTURE / "step0.pt"), "-a", TINY_MODEL_ARG]
    common = ["--tasks", "0", "--episodes", "1", "--max-steps", "8", "--workers", "1", "--stand-ins", "--db", str(db)]
    missing = run_cli_subprocess("run", "simpler_widowx", *args, *common, cwd=tmp_path)
    assert missing.returncode == 2 and "-a statistics=FILE" in missing.stderr
    result = run_cli_subprocess("run", "simpler_widowx", *args, "-a", f"statistics={statistics}", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = db_rows(db, "select policy_name, policy_checkpoint_hash, protocol, policy_requirements from runs")
    assert run[0] == "open-pi-zero-bridge"
    assert run[1] == stable_hash([file_hash(FIXTURE / "step0.pt"), file_hash(statistics)])
    protocol, requirements = json.loads(run[2]), json.loads(run[3])
    assert protocol["image_resize"] == "lanczos4" and requirements["chunk_size"] == 4
    (episode,) = db_rows(db, "select status, steps from episodes")
    assert episode == ("failure", 8)


OPENPI_MODEL_ARG = "model={tokenizer: hash, max_text_tokens: 6, head_dim: 16, vision_heads: 2, chunk_size: 5}"


@pytest.mark.slow
def test_openpi_checkpoint_runs_libero_through_the_cli(tmp_path):
    """openpi's LIBERO conventions on real LIBERO episodes: two cameras and a masked slot, the 8-dim state
    z-scored with the statistics found beside the weights and padded to 32, 7 of 32 action dims executed, 5
    per chunk; recorded under its own name with an identity covering weights and statistics."""
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        "libero_object",
        "--policy",
        "openpi-pi0-libero",
        "--checkpoint",
        str(OPENPI),
        "-a",
        OPENPI_MODEL_ARG,
        "--tasks",
        "0",
        "--episodes",
        "1",
        "--max-steps",
        "12",
        "--workers",
        "1",
        "--db",
        str(db),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run,) = db_rows(db, "select policy_name, policy_checkpoint_hash, policy_requirements from runs")
    statistics = OPENPI / "assets" / "libero" / "norm_stats.json"
    assert run[0] == "openpi-pi0-libero"
    assert run[1] == stable_hash([file_hash(OPENPI / "model.safetensors"), file_hash(statistics)])
    requirements = json.loads(run[2])
    assert (requirements["cameras"], requirements["chunk_size"], requirements["action_dim"]) == (
        ["main", "wrist"],
        5,
        7,
    )
    (episode,) = db_rows(db, "select status, steps from episodes")
    assert episode == ("failure", 12)


def test_openpi_statistics_must_fit_the_suite(tmp_path):
    """Statistics of another robot (their state width differs from the suite's) are refused in one line."""
    from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, TaskInfo
    from qdepth_bench.registry.policies import make_policy

    policy = make_policy("openpi-pi0-libero", {"checkpoint": str(OPENPI), "model": OPENPI_MODEL_ARG[len("model=") :]})
    task = TaskInfo("libero_object", 0, "t", "pick", "panda", (-1,) * 7, (1,) * 7, (0,) * 7, "libero")
    policy.reset(EpisodeContext("k", task, 0))
    images = {role: np.zeros((1, 28, 28, 3), np.uint8) for role in ("main", "wrist")}
    assert policy.act(ObservationBatch(["k"], images, np.zeros((1, 8)), ["pick"])).shape == (1, 5, 7)
    with pytest.raises(UserError, match="suite gives 7-dim proprio state but this checkpoint was trained on 8-dim"):
        policy.act(ObservationBatch(["k"], images, np.zeros((1, 7)), ["pick"]))


def test_a_lerobot_pi0_folder_loads_like_the_openpi_one(tmp_path):
    """LeRobot's pi0: the same weights under `model.`, statistics in its normaliser processor's safetensors."""
    from safetensors.torch import load_file, save_file

    from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, TaskInfo
    from qdepth_bench.registry.policies import make_policy

    folder = tmp_path / "lerobot_pi0"
    folder.mkdir()
    save_file(
        {f"model.{k}": v for k, v in load_file(str(OPENPI / "model.safetensors")).items()}, folder / "model.safetensors"
    )
    stats = json.loads((OPENPI / "assets" / "libero" / "norm_stats.json").read_text())["norm_stats"]
    flat = {
        f"{name}.{stat}": torch.tensor(stats[group][stat])
        for name, group in (("observation.state", "state"), ("action", "actions"))
        for stat in ("mean", "std")
    }
    save_file(flat, folder / "policy_preprocessor_step_3_normalizer_processor.safetensors")
    model_arg = OPENPI_MODEL_ARG[len("model=") :]
    task = TaskInfo("libero_object", 0, "t", "pick", "panda", (-1,) * 7, (1,) * 7, (0,) * 7, "libero")
    draw = np.random.default_rng(0)
    images = {role: draw.integers(0, 255, (1, 28, 28, 3), dtype=np.uint8) for role in ("main", "wrist")}
    chunks = []
    for checkpoint in (OPENPI, folder):
        policy = make_policy("openpi-pi0-libero", {"checkpoint": str(checkpoint), "model": model_arg})
        policy.reset(EpisodeContext("k", task, 0))
        chunks.append(policy.act(ObservationBatch(["k"], images, np.full((1, 8), 0.1), ["pick"])))
    # LeRobot stores the statistics in float32, openpi's JSON holds them in full: the same to ~1e-7
    assert np.allclose(chunks[0], chunks[1], atol=1e-5, rtol=0) and not np.array_equal(
        chunks[0], np.zeros_like(chunks[0])
    )


def test_plain_pi0_on_a_foreign_checkpoint_names_the_family_policy():
    from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, TaskInfo
    from qdepth_bench.registry.policies import make_policy

    policy = make_policy("pi0", {"checkpoint": str(OPENPI), "model": OPENPI_MODEL_ARG[len("model=") :]})
    assert any("--policy openpi-pi0-libero" in notice for notice in policy.notices)
    task = TaskInfo("libero_object", 0, "t", "pick", "panda", (-1,) * 7, (1,) * 7, (0,) * 7, "libero")
    policy.reset(EpisodeContext("k", task, 0))
    with pytest.raises(UserError, match="takes 32-dim state and the suite gives 8.*pad_state=true"):
        policy.act(ObservationBatch(["k"], {"main": np.zeros((1, 28, 28, 3), np.uint8)}, np.zeros((1, 8)), ["pick"]))
