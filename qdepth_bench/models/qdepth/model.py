"""QDepth-VLA (paper section 3.3-3.4): a PaliGemma VLM, a depth expert on SigLIP patch embeddings that
predicts VQ-VAE depth codes, and an action expert trained with conditional flow matching, run jointly as
a mixture of transformers under the hybrid attention mask.

Sequence: [P: 256 image tokens + up to 20 text tokens] [D: 256 depth tokens] [S: 1 proprio token]
[A: chunk noisy-action tokens]. P and D are computed once per action chunk; the 10 Euler integration
steps only run S and A against their cached keys and values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig
from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer, GemmaRMSNorm
from transformers.models.paligemma.modeling_paligemma import PaliGemmaModel

from qdepth_bench.models.qdepth.config import ExpertConfig, QDepthConfig
from qdepth_bench.models.qdepth.depth_head import DepthPixelHead, DepthTokenHead
from qdepth_bench.models.qdepth.mask import block_mask, per_expert_positions, positions
from qdepth_bench.models.qdepth.mot import LayerCache, MixtureOfTransformers, Stream


def paligemma_config(config: QDepthConfig) -> PaliGemmaConfig:
    """The transformers PaliGemma configuration of a named size (used when no backbone folder is given)."""
    v, t = config.vision, config.text
    vision = SiglipVisionConfig(
        hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads,
        image_size=v.image_size,
        patch_size=v.patch_size,
        vision_use_head=False,
    )
    vision.projection_dim = t.hidden_size
    text = expert_gemma_config(config, ExpertConfig(t.hidden_size, t.intermediate_size), vocab_size=t.vocab_size)
    return PaliGemmaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        projection_dim=t.hidden_size,
        hidden_size=t.hidden_size,
        vocab_size=t.vocab_size,
    )


def expert_gemma_config(config: QDepthConfig, expert: ExpertConfig, vocab_size: int = 3) -> GemmaConfig:
    """A Gemma layer configuration of an expert's width with the backbone's head layout."""
    t = config.text
    return GemmaConfig(
        hidden_size=expert.hidden_size,
        intermediate_size=expert.intermediate_size,
        num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        head_dim=t.head_dim,
        vocab_size=vocab_size,
    )


def sinusoidal_time(
    tau: torch.Tensor, width: int, min_period: float = 4e-3, max_period: float = 4.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """pi0's sine-cosine embedding of the flow time (B,) -> (B, width), computed in `dtype` (angles reach
    about 1,600 rad, where float32 rounds sines by ~1e-4; openpi computes them in float64)."""
    fraction = torch.linspace(0.0, 1.0, width // 2, device=tau.device, dtype=dtype)
    period = min_period * (max_period / min_period) ** fraction
    angle = tau[:, None].to(dtype) * (2 * math.pi / period)[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def log_frequency_time(tau: torch.Tensor, width: int, max_period: float) -> torch.Tensor:
    """The transformer-style embedding open-pi-zero uses: frequencies exp(-ln(max_period) i / (half - 1))."""
    half = width // 2
    frequency = torch.exp(torch.arange(half, device=tau.device, dtype=tau.dtype) * -(math.log(max_period) / (half - 1)))
    angle = tau[:, None] * frequency[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def time_features(config: QDepthConfig, tau: torch.Tensor, width: int) -> torch.Tensor:
    """The flow-time embedding the configuration names (B,) -> (B, width)."""
    if config.time_embedding == "log_frequencies":
        return log_frequency_time(tau, width, config.time_max_period)
    return sinusoidal_time(tau, width, dtype=torch.float64 if config.time_float64 else torch.float32)


@dataclass
class Batch:
    """Model inputs as tensors. images: (B, 3, H, W) in [-1, 1], or (B, N, 3, H, W) for N cameras (the first
    is the main camera, whose patches the depth branch reads) with image_masks (B, N) marking the cameras a
    row has; tokens/token_mask: (B, T); state: (B, S) normalised; actions: (B, chunk, A) normalised;
    depth_codes: (B, 256); depth: (B, H, W) relative. action_dim_mask: (B, A), 1 on the action dimensions a
    row's dataset has and 0 on those padded to the model's width (None: every dimension is real); the flow
    is held at zero on padded dimensions and they carry no loss, so the padding is never learned."""

    images: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor
    state: torch.Tensor
    actions: torch.Tensor | None = None
    depth_codes: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    image_masks: torch.Tensor | None = None
    action_dim_mask: torch.Tensor | None = None

    def rows(self, index: slice) -> Batch:
        """The same inputs for a slice of the rows."""
        values: dict[str, Any] = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index] for f in fields(self)
        }
        return Batch(**values)


class QDepthVLA(nn.Module):
    def __init__(self, config: QDepthConfig, backbone: PaliGemmaModel | None = None) -> None:
        super().__init__()
        self.config = config
        pali = backbone if backbone is not None else PaliGemmaModel(paligemma_config(config))
        self.vision = pali.vision_tower
        self.projector = pali.multi_modal_projector
        self.embed_tokens = pali.language_model.embed_tokens
        experts, norms = [pali.language_model.layers], [pali.language_model.norm]
        n_layers = config.text.num_hidden_layers
        self.depth_expert_index: int | None = None
        if config.has_depth_tokens_in_sequence:
            depth_gemma = expert_gemma_config(config, config.depth_expert)
            experts.append(nn.ModuleList(GemmaDecoderLayer(depth_gemma, i) for i in range(n_layers)))
            norms.append(GemmaRMSNorm(config.depth_expert.hidden_size))
            self.depth_expert_index = len(experts) - 1
            self.depth_in = nn.Sequential(
                nn.Linear(config.vision.hidden_size, config.depth_expert.hidden_size),
                nn.GELU(),
                nn.Linear(config.depth_expert.hidden_size, config.depth_expert.hidden_size),
            )
        action_gemma = expert_gemma_config(config, config.action_expert)
        experts.append(nn.ModuleList(GemmaDecoderLayer(action_gemma, i) for i in range(n_layers)))
        norms.append(GemmaRMSNorm(config.action_expert.hidden_size))
        self.action_expert_index = len(experts) - 1
        thetas = {len(experts) - 1: config.action_rope_theta} if config.action_rope_theta is not None else {}
        self.mot = MixtureOfTransformers(experts, pali.language_model.rotary_emb, norms, thetas, config.attn_softcap)

        width = config.action_expert.hidden_size
        self.state_in = nn.Linear(config.state_dim, width)
        self.action_in = nn.Linear(config.action_dim, width)
        self.action_time = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width))
        self.action_out = nn.Linear(width, config.action_dim)

        self.depth_head: DepthTokenHead | DepthPixelHead | None = None
        if config.has_depth:
            head_width = config.depth_expert.hidden_size if config.depth_branch == "expert" else config.text.hidden_size
            if config.depth_target == "tokens":
                self.depth_head = DepthTokenHead(
                    head_width, config.code_dim, config.depth_grid, config.codebook_size, config.depth_temperature
                )
            else:
                self.depth_head = DepthPixelHead(
                    head_width, config.code_dim, config.depth_grid, config.vision.patch_size
                )

    # ----- inputs ---------------------------------------------------------------------------------------

    def _prefix(self, batch: Batch) -> tuple[list[Stream], dict[str, int], torch.Tensor]:
        """Streams P (and D), the block lengths so far, and which prefix tokens are real."""
        images = batch.images if batch.images.ndim == 5 else batch.images[:, None]
        b, n = images.shape[:2]
        # SigLIP per camera (one pass over all), before language fusion
        patches = self.vision(pixel_values=images.flatten(0, 1)).last_hidden_state.unflatten(0, (b, n))
        shown = (
            torch.ones(b, n, dtype=torch.bool, device=images.device) if batch.image_masks is None else batch.image_masks
        )
        prefix = torch.cat([self.projector(patches.flatten(1, 2)), self.embed_tokens(batch.tokens)], dim=1)
        valid = torch.cat([shown.bool().repeat_interleave(patches.shape[2], dim=1), batch.token_mask.bool()], dim=1)
        patches = patches[:, 0]  # the main camera's, which the depth branch reads
        streams, lengths = [Stream(0, prefix)], {"P": prefix.shape[1]}
        if self.depth_expert_index is not None:
            streams.append(Stream(self.depth_expert_index, self._expert_input(self.depth_in(patches))))
            lengths["D"] = patches.shape[1]
        return streams, lengths, valid

    def _expert_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """An expert's input tokens, times sqrt(width) under `expert_input_scale` (as Gemma scales embeddings)."""
        if not self.config.expert_input_scale:
            return tokens
        return tokens * torch.tensor(tokens.shape[-1] ** 0.5, dtype=tokens.dtype, device=tokens.device)

    def _suffix(self, state: torch.Tensor, noisy: torch.Tensor, clock: torch.Tensor) -> Stream:
        """The action expert's tokens: one proprio token, then the noisy chunk fused with the flow time as the
        embedding reads it (`clock`: tau, or 1 - tau under time_input one_minus_tau)."""
        actions = self.action_in(noisy)
        time = time_features(self.config, clock, actions.shape[-1]).to(actions.dtype)[:, None].expand_as(actions)
        fused = [time, actions] if self.config.time_first else [actions, time]
        actions = self.action_time(torch.cat(fused, dim=-1))
        tokens = torch.cat([self.state_in(state)[:, None], actions], dim=1)
        return Stream(self.action_expert_index, self._expert_input(tokens))

    def _positions(self, lengths: dict[str, int], valid: torch.Tensor) -> torch.Tensor:
        if self.config.positions == "per_expert":
            return per_expert_positions(lengths, valid.shape[0])
        return positions(lengths, valid)

    def _lengths(self, lengths: dict[str, int]) -> dict[str, int]:
        return {**lengths, "S": 1, "A": self.config.chunk_size}

    # ----- training ---------------------------------------------------------------------------------------

    def sample_tau(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Flow time tau = s * (1 - Beta(a, b)): mostly small tau, i.e. noisy action samples (pi0's choice)."""
        c = self.config
        u = torch.rand(batch_size, device=device, generator=generator)
        # Beta(a, 1) by inverse CDF (b = 1 in the paper's recipe); a general b uses torch's sampler.
        beta = (
            u ** (1.0 / c.flow_beta_a)
            if c.flow_beta_b == 1.0
            else torch.distributions.Beta(c.flow_beta_a, c.flow_beta_b).sample((batch_size,)).to(device)
        )
        return c.flow_s * (1.0 - beta)

    def losses(
        self, batch: Batch, noise: torch.Tensor | None = None, tau: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Flow-matching loss (eq. 5-7) and the depth loss (eq. 4, or MSE for the pixel variant)."""
        actions = batch.actions
        if actions is None:
            raise ValueError("losses need the batch's target actions")
        noise = torch.randn_like(actions) if noise is None else noise
        real = None if batch.action_dim_mask is None else batch.action_dim_mask[:, None, :].to(actions.dtype)
        if real is not None:  # padded dimensions: no noise in, no target out (Octo's action_pad_mask)
            noise, actions = noise * real, actions * real
        tau = self.sample_tau(actions.shape[0], actions.device) if tau is None else tau
        t = tau[:, None, None].to(actions.dtype)
        keep = 1 - self.config.flow_sig_min
        noisy = (1 - keep * t) * noise + t * actions
        target = actions - keep * noise
        if self.config.velocity == "noise_minus_data":
            target = -target
        streams, lengths, valid = self._prefix(batch)
        clock = 1 - tau if self.config.time_input == "one_minus_tau" else tau
        streams.append(self._suffix(batch.state, noisy, clock))
        lengths = self._lengths(lengths)
        mask = block_mask(self.config.mask, lengths, valid.cpu()).to(actions.device)
        outputs, _ = self.mot(streams, self._positions(lengths, valid.cpu()).to(actions.device), mask)
        velocity = self.action_out(outputs[-1][:, 1:])
        if real is None:
            result = {"flow": F.mse_loss(velocity, target)}
        else:  # the mean over the real dimensions only
            result = {"flow": ((velocity - target) ** 2 * real).sum() / (real.sum() * velocity.shape[1])}
        if self.depth_head is not None:
            hidden = self._depth_hidden(outputs)
            depth = batch.depth_codes if self.config.depth_target == "tokens" else batch.depth
            if depth is None:
                raise ValueError(f"the {self.config.depth_target} depth target is missing from the batch")
            result["depth"] = self.depth_head.loss(hidden, depth)
        return result

    def forward(
        self, batch: Batch, noise: torch.Tensor | None = None, tau: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The training losses (through `forward`, which a sharding wrapper hooks to gather the weights)."""
        return self.losses(batch, noise, tau)

    def _depth_hidden(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Outputs at the depth positions: the depth expert's, or the VLM's image-token outputs."""
        if self.depth_expert_index is not None:
            return outputs[1]
        return outputs[0][:, : self.config.num_image_tokens]

    def depth_weight(self, step: int) -> float:
        """lambda_t = lambda_0 * gamma^t (paper eq. 8)."""
        return self.config.depth_loss_weight * self.config.depth_loss_decay**step

    def total_loss(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        total = losses["flow"]
        if "depth" in losses:
            total = total + self.depth_weight(step) * losses["depth"]
        return total

    # ----- inference --------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_actions(
        self, batch: Batch, noise: torch.Tensor | None = None, reuse_prefix: bool = True
    ) -> torch.Tensor:
        """Integrate the flow from noise (tau = 0) to actions (tau = 1) in `num_integration_steps` Euler steps.

        With `reuse_prefix`, P and D run once and each step runs only S and A against their cached keys and
        values; without it every step recomputes the whole sequence (same result, for the benchmark).
        """
        return self._integrate(batch, noise, reuse_prefix)[0]

    @torch.no_grad()
    def sample_actions_and_depth(
        self, batch: Batch, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The actions `sample_actions` gives, and the depth head's output on the same prefix pass: logits
        (B, N, K) over the codebook for the token head, relative depth (B, H, W) for the pixel head. P and D
        attend to nothing after them, so their outputs are those of the training pass."""
        if self.depth_head is None:
            raise ValueError("this variant has no depth head")
        actions, prefix = self._integrate(batch, noise, reuse_prefix=True)
        hidden = self._depth_hidden(prefix)
        if isinstance(self.depth_head, DepthTokenHead):
            return actions, self.depth_head.logits(hidden)
        return actions, self.depth_head.predict(hidden)

    def _integrate(
        self, batch: Batch, noise: torch.Tensor | None, reuse_prefix: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The integrated actions, and the prefix streams' outputs (P, and D where the variant has it)."""
        c = self.config
        b, device = batch.state.shape[0], batch.state.device
        x = torch.randn(b, c.chunk_size, c.action_dim, device=device) if noise is None else noise.clone()
        real = None if batch.action_dim_mask is None else batch.action_dim_mask[:, None, :].to(x.dtype)
        if real is not None:
            x = x * real  # padded dimensions stay at zero, as in training
        prefix_streams, prefix_lengths, valid = self._prefix(batch)
        lengths = self._lengths(prefix_lengths)
        mask = block_mask(c.mask, lengths, valid.cpu()).to(device)
        pos = self._positions(lengths, valid.cpu()).to(device)
        n_prefix = sum(prefix_lengths.values())
        cache: LayerCache | None = None
        prefix: list[torch.Tensor] = []
        if reuse_prefix:
            prefix, cache = self.mot(prefix_streams, pos[:, :n_prefix], mask[:, :n_prefix, :n_prefix], keep_cache=True)
        dt = 1.0 / c.num_integration_steps
        direction = dt if c.velocity == "data_minus_noise" else -dt
        countdown = torch.tensor(1.0, device=device)  # one_minus_tau: openpi's clock, 1 stepping down by dt
        for step in range(c.num_integration_steps):
            if c.time_input == "one_minus_tau":
                clock = countdown.expand(b)
                countdown = countdown + torch.tensor(-dt, device=device)
            else:
                clock = torch.full((b,), step * dt, device=device)
            suffix = self._suffix(batch.state, x, clock)
            if reuse_prefix:
                outputs, _ = self.mot([suffix], pos[:, n_prefix:], mask[:, n_prefix:], cache=cache)
            else:
                outputs, _ = self.mot([*prefix_streams, suffix], pos, mask)
                prefix = outputs[:-1]
            velocity = self.action_out(outputs[-1][:, 1:])
            x = x + direction * (velocity if real is None else velocity * real)
        if c.final_action_clip is not None:
            x = x.clamp(-c.final_action_clip, c.final_action_clip)
        return x, prefix

    @torch.no_grad()
    def predict_depth_codes(self, batch: Batch) -> torch.Tensor:
        """The depth codes the model predicts for a batch's images (for the depth reconstruction figure)."""
        if not isinstance(self.depth_head, DepthTokenHead):
            raise ValueError("this variant does not predict depth tokens")
        streams, lengths, valid = self._prefix(batch)
        mask = block_mask(self.config.mask, lengths, valid.cpu()).to(batch.images.device)
        outputs, _ = self.mot(streams, self._positions(lengths, valid.cpu()).to(batch.images.device), mask)
        return self.depth_head.predict_codes(self._depth_hidden(outputs))

    def expert_parameter_counts(self) -> dict[str, int]:
        """Parameters per module group: VLM (vision + projector + Gemma), depth expert, action expert, heads."""

        def count(*modules: nn.Module | None) -> int:
            return sum(p.numel() for m in modules if m is not None for p in m.parameters())

        counts = {
            "vision": count(self.vision, self.projector),
            "vlm_language": count(self.embed_tokens, self.mot.experts[0], self.mot.norms[0]),
            "action_expert": count(
                self.mot.experts[self.action_expert_index],
                self.mot.norms[self.action_expert_index],
                self.state_in,
                self.action_in,
                self.action_time,
                self.action_out,
            ),
        }
        if self.depth_expert_index is not None:
            counts["depth_expert"] = count(
                self.mot.experts[self.depth_expert_index], self.mot.norms[self.depth_expert_index], self.depth_in
            )
        if self.depth_head is not None:
            counts["depth_head"] = count(self.depth_head)
        counts["total"] = count(self)
        return counts
