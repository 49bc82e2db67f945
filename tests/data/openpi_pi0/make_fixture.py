"""Writes the openpi pi0 parity fixture by running the reference code itself (never imported by tests).

Run with openpi's `src/` importable and transformers 4.53.2 patched with openpi's
`models_pytorch/transformers_replace` (see README.md here):

    PYTHONPATH=<site>:<openpi>/src python tests/data/openpi_pi0/make_fixture.py

It builds the reference `PI0Pytorch` (pi0, not pi0.5) with its own code at reduced sizes of the same structure:
the sizes openpi hard-codes for the released model (SigLIP So400m, vocabulary 257152) are replaced where its
configs are built, nothing else. Observation preprocessing (resize to 224 and training augmentation) is data
pipeline, not model: the fixture hands the model its images, masks, tokens and state directly. Writes
  model.safetensors  the weights under the reference's key names
  io.pt              three camera images (the third masked, as openpi pads a missing camera), two prompts of
                     different length, state, noise, flow time and target actions, and the reference's
                     `sample_actions` output and per-element training loss
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent
BATCH, TOKENS, HORIZON, DIM, SEED = 2, 6, 5, 32, 0


@dataclasses.dataclass
class Config:
    pi05: bool = False
    paligemma_variant: str = "dummy"  # openpi's own reduced Gemma: width 64, 4 layers, 8 heads of 16
    action_expert_variant: str = "tiny_expert"
    dtype: str = "float32"
    action_dim: int = DIM
    action_horizon: int = HORIZON
    pytorch_compile_mode: str | None = None


def shrink() -> None:
    """Reduce the sizes openpi fixes inside its constructors: the vision tower, the vocabulary, and an action
    expert narrower than the VLM (so a mix-up of the two cannot pass)."""
    import openpi.models.gemma as gemma
    import openpi.models_pytorch.gemma_pytorch as gp

    real_config, real_pali, real_gemma = gemma.get_config, gp.PaliGemmaForConditionalGeneration, gp.GemmaForCausalLM

    def get_config(variant):
        if variant == "tiny_expert":
            return gemma.Config(width=32, depth=4, mlp_dim=48, num_heads=8, num_kv_heads=1, head_dim=16)
        return real_config(variant)

    def pali(config):
        vision = config.vision_config
        vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers = 24, 48, 2
        vision.num_attention_heads, vision.image_size, vision.patch_size = 2, 28, 14
        vision.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = config._vocab_size = 64
        return real_pali(config=config)

    def expert(config):
        config.vocab_size = 64
        return real_gemma(config=config)

    gemma.get_config = get_config
    gp.PaliGemmaForConditionalGeneration = pali
    gp.GemmaForCausalLM = expert


def main() -> None:
    shrink()
    from openpi.models_pytorch.pi0_pytorch import PI0Pytorch
    from safetensors.torch import save_model

    model = PI0Pytorch(Config())
    draw = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=draw))
    model.eval()

    images = [torch.rand(BATCH, 3, 28, 28, generator=draw) * 2 - 1 for _ in range(3)]
    image_masks = [
        torch.ones(BATCH, dtype=torch.bool),
        torch.ones(BATCH, dtype=torch.bool),
        torch.zeros(BATCH, dtype=torch.bool),
    ]
    tokens = torch.zeros(BATCH, TOKENS, dtype=torch.long)
    tokens[0, :4] = torch.tensor([2, 17, 33, 9])
    tokens[1, :6] = torch.tensor([2, 5, 41, 12, 50, 9])
    token_mask = tokens != 0
    state = torch.rand(BATCH, DIM, generator=draw) * 2 - 1
    actions = torch.rand(BATCH, HORIZON, DIM, generator=draw) * 2 - 1
    noise = torch.randn(BATCH, HORIZON, DIM, generator=draw)
    loss_noise = torch.randn(BATCH, HORIZON, DIM, generator=draw)
    time = torch.tensor([0.3, 0.85])
    model._preprocess_observation = lambda observation, train=True: (
        images,
        image_masks,
        tokens,
        token_mask,
        state,
    )
    with torch.no_grad():
        sampled = model.sample_actions("cpu", dataclasses.make_dataclass("Obs", ["state"])(state), noise=noise)
        loss = model(None, actions, noise=loss_noise, time=time)

    save_model(model, str(OUT / "model.safetensors"))  # as openpi's trainer saves (shared tensors once)
    torch.save(
        {
            "images": torch.stack(images, 1),
            "image_masks": torch.stack(image_masks, 1),
            "tokens": tokens,
            "token_mask": token_mask,
            "state": state,
            "noise": noise,
            "actions": sampled,
            "target_actions": actions,
            "time": time,
            "loss_noise": loss_noise,
            "loss": loss,
        },
        OUT / "io.pt",
    )
    print(f"actions {tuple(sampled.shape)}, mean loss {float(loss.mean()):.6f}")


if __name__ == "__main__":
    main()
