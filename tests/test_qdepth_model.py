"""QDepth-VLA: masks block by block, gradients that respect them, every variant trains and samples, a tiny
model overfits a fixed batch, the full size builds on the meta device, checkpoints round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.models.qdepth.checkpoint import NormStats, load_checkpoint, model_with_backbone, save_checkpoint
from qdepth_bench.models.qdepth.config import VARIANTS, build_config
from qdepth_bench.models.qdepth.mask import block_mask, positions
from qdepth_bench.models.qdepth.model import Batch, QDepthVLA, paligemma_config
from qdepth_bench.models.qdepth.mot import Stream
from qdepth_bench.models.qdepth.tokenizer import HashWordTokenizer

LENGTHS = {"P": 3, "D": 2, "S": 1, "A": 2}


def spans(lengths):
    out, start = {}, 0
    for block, n in lengths.items():
        out[block] = slice(start, start + n)
        start += n
    return out


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("hybrid", {"P": "P", "D": "PD", "S": "PS", "A": "PDSA"}),
        ("causal", {"P": "P", "D": "PD", "S": "PDS", "A": "PDSA"}),
    ],
)
def test_mask_blocks(kind, expected):
    mask = block_mask(kind, LENGTHS)[0]
    s = spans(LENGTHS)
    for query in "PDSA":
        for key in "PDSA":
            block = mask[s[query], s[key]]
            if key in expected[query]:
                assert block.all(), f"{kind}: {query} must see {key}"
            else:
                assert not block.any(), f"{kind}: {query} must not see {key}"


def test_mask_without_depth_block_is_pi0s_and_padding_is_hidden():
    lengths = {"P": 3, "S": 1, "A": 2}
    valid = torch.tensor([[True, True, False]])
    mask = block_mask("hybrid", lengths, valid)[0]
    s = spans(lengths)
    assert mask[s["S"], s["P"]][:, :2].all() and not mask[s["S"], s["A"]].any() and mask[s["A"], s["S"]].all()
    assert not mask[:, 2].any()  # the padded text token is no one's key
    assert positions(lengths, valid)[0].tolist() == [0, 1, 1, 2, 3, 4]


def tiny_batch(config, batch_size: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    tokenizer = HashWordTokenizer(config.text.vocab_size - 3, config.max_text_tokens)
    ids, mask = tokenizer(["put the bowl on the plate", "pick up the ketchup and place it in the basket"][:batch_size])
    size = config.vision.image_size
    return Batch(
        images=torch.rand(batch_size, 3, size, size, generator=g) * 2 - 1,
        tokens=torch.from_numpy(ids),
        token_mask=torch.from_numpy(mask),
        state=torch.randn(batch_size, config.state_dim, generator=g),
        actions=torch.rand(batch_size, config.chunk_size, config.action_dim, generator=g) * 2 - 1,
        depth_codes=torch.randint(0, config.codebook_size, (batch_size, config.num_image_tokens), generator=g),
        depth=torch.rand(batch_size, size, size, generator=g),
    )


@pytest.mark.parametrize("kind", ["hybrid", "causal"])
def test_gradients_respect_the_mask(kind):
    """Proprio outputs depend on depth tokens only under the causal mask; the prefix never sees S or A."""
    torch.manual_seed(0)
    model = QDepthVLA(build_config("tiny", "qdepth" if kind == "hybrid" else "qdepth-causal"))
    c = model.config
    hidden = {
        "P": torch.randn(1, 4, c.text.hidden_size, requires_grad=True),
        "D": torch.randn(1, 3, c.depth_expert.hidden_size, requires_grad=True),
        "SA": torch.randn(1, 1 + c.chunk_size, c.action_expert.hidden_size, requires_grad=True),
    }
    lengths = {"P": 4, "D": 3, "S": 1, "A": c.chunk_size}
    streams = [
        Stream(0, hidden["P"]),
        Stream(model.depth_expert_index, hidden["D"]),
        Stream(model.action_expert_index, hidden["SA"]),
    ]
    valid = torch.ones(1, 4, dtype=torch.bool)
    outputs, _ = model.mot(streams, positions(lengths, valid), block_mask(kind, lengths, valid))
    p_out, d_out, sa_out = outputs

    def grads(output, *inputs):
        return torch.autograd.grad(output.sum(), inputs, allow_unused=True, retain_graph=True)

    g_p_from_sa, g_p_from_d = grads(p_out, hidden["SA"], hidden["D"])
    assert g_p_from_sa is None or g_p_from_sa.abs().max() == 0
    assert g_p_from_d is None or g_p_from_d.abs().max() == 0
    (g_d_from_sa,) = grads(d_out, hidden["SA"])
    assert g_d_from_sa is None or g_d_from_sa.abs().max() == 0
    (g_s_from_d,) = grads(sa_out[:, :1], hidden["D"])
    if kind == "hybrid":
        assert g_s_from_d is None or g_s_from_d.abs().max() == 0
    else:
        assert g_s_from_d.abs().max() > 0
    (g_a_from_d,) = grads(sa_out[:, 1:], hidden["D"])
    assert g_a_from_d.abs().max() > 0  # actions do see depth
    (g_s_from_a,) = grads(sa_out[:, :1], hidden["SA"])
    assert g_s_from_a[:, 1:].abs().max() == 0  # proprio never sees the noisy actions


def test_action_loss_sends_no_gradient_into_the_depth_head():
    torch.manual_seed(0)
    model = QDepthVLA(build_config("tiny"))
    losses = model.losses(tiny_batch(model.config))
    losses["flow"].backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.depth_head.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.depth_in.parameters())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_a_step_and_samples_a_chunk(variant):
    torch.manual_seed(0)
    model = QDepthVLA(build_config("tiny", variant))
    batch = tiny_batch(model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = model.losses(batch)
    assert ("depth" in losses) == (variant != "pi0")
    model.total_loss(losses, step=0).backward()
    optimizer.step()
    actions = model.sample_actions(batch)
    assert actions.shape == (2, model.config.chunk_size, model.config.action_dim) and torch.isfinite(actions).all()


def test_prefix_reuse_gives_the_same_actions():
    torch.manual_seed(0)
    model = QDepthVLA(build_config("tiny")).eval()
    batch = tiny_batch(model.config)
    noise = torch.randn(2, model.config.chunk_size, model.config.action_dim)
    reused = model.sample_actions(batch, noise=noise, reuse_prefix=True)
    recomputed = model.sample_actions(batch, noise=noise, reuse_prefix=False)
    torch.testing.assert_close(reused, recomputed, atol=1e-5, rtol=1e-5)


def test_tiny_model_overfits_a_fixed_batch():
    """Flow-matching loss (fixed noise and times) and depth cross-entropy both fall by 10x."""
    torch.manual_seed(0)
    model = QDepthVLA(build_config("tiny"))
    batch = tiny_batch(model.config)
    noise = torch.randn(2, model.config.chunk_size, model.config.action_dim)
    tau = torch.tensor([0.3, 0.7])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    first = None
    for _ in range(150):
        losses = model.losses(batch, noise=noise, tau=tau)
        first = first or {k: float(v.detach()) for k, v in losses.items()}
        optimizer.zero_grad()
        (losses["flow"] + losses["depth"]).backward()
        optimizer.step()
    last = {k: float(v) for k, v in model.losses(batch, noise=noise, tau=tau).items()}
    assert last["flow"] < first["flow"] / 10, (first, last)
    assert last["depth"] < first["depth"] / 10, (first, last)


def test_full_size_builds_on_meta_with_paper_sized_experts():
    with torch.device("meta"):
        model = QDepthVLA(build_config("full"))
    counts = model.expert_parameter_counts()
    assert 280e6 < counts["action_expert"] < 340e6
    assert 280e6 < counts["depth_expert"] < 340e6
    assert 2.5e9 < counts["vision"] + counts["vlm_language"] < 3.1e9  # PaliGemma-3B


def test_checkpoint_round_trip_and_policy(tmp_path):
    from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, TaskInfo
    from qdepth_bench.registry.policies import make_policy

    torch.manual_seed(0)
    model = QDepthVLA(build_config("tiny"))
    stats = NormStats.identity(8, 7)
    folder = save_checkpoint(tmp_path / "ckpt", model.config, model.state_dict(), stats, "qdepth")
    loaded = load_checkpoint(folder)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)

    policy = make_policy("qdepth", {"checkpoint": str(folder)})
    identity = policy.identity()
    assert identity.checkpoint_hash == loaded.weights_hash and identity.name == "qdepth"
    task = TaskInfo("libero_object", 0, "t", "pick up the soup", "panda", (-1,) * 7, (1,) * 7, (0,) * 7, "libero")
    keys = ["s/0/0", "s/0/1"]
    for i, key in enumerate(keys):
        policy.reset(EpisodeContext(key, task, seed=100 + i))
    rng = np.random.default_rng(0)
    obs = ObservationBatch(
        keys,
        {"main": rng.integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)},
        rng.normal(size=(2, 8)),
        ["pick up the soup"] * 2,
    )
    chunk = policy.act(obs)
    assert chunk.shape == (2, 4, 7) and chunk.dtype == np.float32
    # per-episode noise and row-by-row inference: a row's actions are bit-identical whatever its batch-mates
    # (a batched pass rounds differently, and closed-loop episodes amplify that into different outcomes)
    row = ObservationBatch([keys[1]], {"main": obs.images["main"][1:]}, obs.state[1:], obs.instructions[1:])
    policy.reset(EpisodeContext(keys[1], task, seed=101))
    np.testing.assert_array_equal(policy.act(row)[0], chunk[1])
    batched = make_policy("qdepth", {"checkpoint": str(folder), "batch_invariant": "false"})
    assert batched.identity().config_hash != identity.config_hash  # recorded as a different policy setting
    for i, key in enumerate(keys):
        batched.reset(EpisodeContext(key, task, seed=100 + i))
    np.testing.assert_allclose(batched.act(obs), chunk, atol=1e-5)

    with pytest.raises(UserError, match="holds a 'qdepth' model"):
        make_policy("pi0", {"checkpoint": str(folder)})
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(folder)
    with pytest.raises(UserError, match="needs a checkpoint"):
        make_policy("qdepth-causal")  # no checkpoint ships for the ablation variants


def test_backbone_folder_loads_paligemma_weights_and_tokenizer(tmp_path):
    """A PaliGemma folder in transformers' format (made here at tiny size) provides weights and tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PaliGemmaForConditionalGeneration, PreTrainedTokenizerFast

    config = build_config("tiny")
    torch.manual_seed(0)
    pali = PaliGemmaForConditionalGeneration(paligemma_config(config))
    folder = tmp_path / "paligemma"
    pali.save_pretrained(folder)
    words = ["<pad>", "<bos>", "<eos>", "<unk>", "pick", "up", "the", "soup", "\n"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    ).save_pretrained(folder)
    model = model_with_backbone(folder, action_expert=config.action_expert, depth_expert=config.depth_expert)
    assert model.config.tokenizer == "folder" and model.config.text.hidden_size == config.text.hidden_size
    torch.testing.assert_close(model.embed_tokens.weight, pali.model.language_model.embed_tokens.weight)
    torch.testing.assert_close(
        model.mot.experts[0][0].self_attn.q_proj.weight, pali.model.language_model.layers[0].self_attn.q_proj.weight
    )
    from qdepth_bench.models.qdepth.checkpoint import make_tokenizer

    ids, mask = make_tokenizer(model.config, folder)(["pick up the soup"])
    assert ids.shape == (1, 20) and mask.sum() >= 4
    saved = save_checkpoint(
        tmp_path / "ckpt",
        model.config,
        model.state_dict(),
        NormStats.identity(8, 7),
        "qdepth",
        tokenizer=make_tokenizer(model.config, folder),
    )
    assert json.loads((saved / "config.json").read_text())["model"]["tokenizer"] == "folder"
    assert load_checkpoint(saved).tokenizer(["pick up the soup"])[0].tolist() == ids.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["qdepth", "pi0"])
def test_shipped_checkpoint_is_the_default_and_says_so(tmp_path, policy):
    """The README's main command: `run libero_object --policy qdepth` with no checkpoint loads the small model
    that ships in content/policies/checkpoints/, announces it, and records its weights' hash with the run."""
    from conftest import db_rows, run_cli_subprocess

    from qdepth_bench.registry.content import builtin_root

    shipped = load_checkpoint(builtin_root() / "policies" / "checkpoints" / f"{policy}-tiny-libero-object")
    assert shipped.variant == policy and shipped.model.config.size == "tiny"
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        "libero_object",
        "--policy",
        policy,
        "--tasks",
        "0",
        "--episodes",
        "1",
        "--max-steps",
        "8",
        "--workers",
        "1",
        "--db",
        str(db),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "not the paper's weights; pass --checkpoint FOLDER" in result.stderr
    assert db_rows(db, "select policy_checkpoint_hash from runs") == [(shipped.weights_hash,)]
    [(status, steps)] = db_rows(db, "select status, steps from episodes")
    assert status in ("success", "failure") and 1 <= steps <= 8
