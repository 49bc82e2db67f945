"""Writes the open-pi-zero parity fixture by running the reference code itself (never imported by tests).

Run from a checkout of allenzren/open-pi-zero (omegaconf, hydra-core and einops importable; bitsandbytes may be
a stand-in module, since fp32 never builds its 4-bit layers):

    PYTHONPATH=<open-pi-zero checkout> python tests/data/open_pi_zero_tiny/make_fixture.py <open-pi-zero checkout>

It builds the reference `PiZero` at a tiny size of the released Bridge configuration (same structure: SigLIP,
Gemma VLM mixture, tied proprio/action mixture), fills every parameter from a seeded normal draw, and writes
  step0.pt     the weights as open-pi-zero's trainer saves them ({"model": state_dict, ...}, its own key names)
  io.pt        a fixed batch (token ids, attention mask, pixels, proprio), the noise its sampler draws, a flow
               time and target actions, and the reference's outputs: `infer_action` actions, the naive
               (uncached) actions, and the training loss
  config.yaml  the reference configuration used (sizes and conventions)
  full_keys.json  every key and shape of the full-size released configuration (config/eval/bridge.yaml),
               built on the meta device (no memory, no weights)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

OUT = Path(__file__).resolve().parent
N_IMAGE, TEXT, BATCH, SEED = 4, 6, 2, 0


def reference_config(checkout: Path):
    cfg = OmegaConf.load(checkout / "config/eval/bridge.yaml")
    small = {
        "max_image_text_tokens": N_IMAGE + TEXT,
        "vocab_size": 64,
        "image_token_index": 60,
        "pad_token_id": 0,
        "num_inference_steps": 10,
        "time_max_period": 100.0,  # not the released 10000: proves the value is read, not assumed
        "action_expert_rope_theta": 100.0,
        "mixture": {
            "vlm": {"hidden_size": 32, "intermediate_size": 64},
            "proprio": {"hidden_size": 16, "intermediate_size": 40},
            "action": {"hidden_size": 16, "intermediate_size": 40},
        },
        "vision": {
            "config": {
                "hidden_size": 24,
                "intermediate_size": 48,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 28,
                "patch_size": 14,
                "num_image_tokens": N_IMAGE,
            }
        },
        "vision_projector": {"config": {"vision_config": {"hidden_size": 24, "projection_dim": 32}}},
        "joint": {
            "config": {"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16}
        },
    }
    cfg = OmegaConf.merge(cfg, small)
    for unused in ("hydra", "log_dir", "env", "n_video"):  # evaluation plumbing (log folders, simulator)
        del cfg[unused]
    cfg.max_image_text_tokens = N_IMAGE + TEXT
    return cfg


def full_keys(checkout: Path) -> dict[str, list[int]]:
    from src.model.vla.pizero import PiZero

    cfg = OmegaConf.load(checkout / "config/eval/bridge.yaml")
    for unused in ("hydra", "log_dir", "env", "n_video"):
        del cfg[unused]
    cfg.max_image_text_tokens = 276
    with torch.device("meta"):
        model = PiZero(cfg)
        model.tie_action_proprio_weights()
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def main(checkout: Path) -> None:
    sys.path.insert(0, str(checkout))
    from src.model.vla.pizero import PiZero

    (OUT / "full_keys.json").write_text(json.dumps(full_keys(checkout), indent=0) + "\n")

    cfg = reference_config(checkout)
    model = PiZero(cfg)
    model.tie_action_proprio_weights()
    draw = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=draw))
    model.eval()

    # two prompts of different length, padded on the right as the reference's processor pads
    ids = torch.zeros(BATCH, N_IMAGE + TEXT, dtype=torch.long)
    ids[:, :N_IMAGE] = cfg.image_token_index
    ids[0, N_IMAGE : N_IMAGE + 4] = torch.tensor([2, 17, 33, 9])
    ids[1, N_IMAGE : N_IMAGE + 6] = torch.tensor([2, 5, 41, 12, 50, 9])
    attention = (ids != cfg.pad_token_id).long()
    pixels = torch.rand(BATCH, 3, 28, 28, generator=draw) * 2 - 1
    proprio = torch.rand(BATCH, 1, cfg.proprio_dim, generator=draw) * 2 - 1
    actions = torch.rand(BATCH, cfg.horizon_steps, cfg.action_dim, generator=draw) * 2 - 1
    t = torch.tensor([0.3, 0.85])

    mask, vlm_pos, proprio_pos, action_pos = model.build_causal_mask_and_position_ids(attention, torch.float32)
    prefix_mask, action_mask = model.split_full_mask_into_submasks(mask)
    with torch.no_grad():
        torch.manual_seed(SEED + 1)
        noise = torch.randn(BATCH, cfg.horizon_steps, cfg.action_dim)
        torch.manual_seed(SEED + 1)
        cached = model.infer_action(ids, pixels, prefix_mask, action_mask, vlm_pos, proprio_pos, action_pos, proprio)
        torch.manual_seed(SEED + 1)
        naive = model.infer_action_naive(ids, pixels, mask, vlm_pos, proprio_pos, action_pos, proprio)
        torch.manual_seed(SEED + 2)
        loss_noise = torch.randn(BATCH, cfg.horizon_steps, cfg.action_dim)
        torch.manual_seed(SEED + 2)
        loss = model(ids, pixels, mask, vlm_pos, proprio_pos, action_pos, proprio, actions, t)

    torch.save({"cnt_update": 0, "cnt_batch": 0, "model": model.state_dict()}, OUT / "step0.pt")
    torch.save(
        {
            "input_ids": ids,
            "attention_mask": attention,
            "pixel_values": pixels,
            "proprios": proprio,
            "noise": noise,
            "actions": cached,
            "actions_naive": naive,
            "target_actions": actions,
            "t": t,
            "loss_noise": loss_noise,
            "loss": loss.reshape(()),
        },
        OUT / "io.pt",
    )
    (OUT / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    print(f"max |cached - naive| = {(cached - naive).abs().max():.2e}; loss = {float(loss):.6f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
