"""Mixture of transformers: per layer, each expert (VLM, depth, action) applies its own norms, Q/K/V/O
projections and MLP to its own tokens, and attention runs jointly over all tokens under one block mask.

Expert layers are transformers' `GemmaDecoderLayer`s (the VLM's are the Gemma decoder's own), so a real
PaliGemma checkpoint plugs in unchanged; this module only runs them jointly. Query/key/value heads of all
experts share one layout (heads, key/value heads, head dim), which is what makes the joint attention a
single attention over the concatenated sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer, apply_rotary_pos_emb


@dataclass
class Stream:
    """A run of tokens handled by one expert: its layers' index in the expert list and its hidden states."""

    expert: int
    hidden: torch.Tensor  # (B, L, width of that expert)


#: Per layer, the rotated keys and values of tokens already processed (a computed prefix).
LayerCache = list[tuple[torch.Tensor, torch.Tensor]]


def _heads(x: torch.Tensor, n: int, head_dim: int) -> torch.Tensor:
    return x.view(x.shape[0], x.shape[1], n, head_dim).transpose(1, 2)


def joint_layer(
    layers: list[GemmaDecoderLayer],
    streams: list[Stream],
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    past: tuple[torch.Tensor, torch.Tensor] | None = None,
    softcap: float | None = None,
) -> tuple[list[Stream], tuple[torch.Tensor, torch.Tensor]]:
    """One joint layer. `cos`/`sin` cover the streams' tokens; `mask` is (B, L_new, L_past + L_new);
    `softcap` soft-caps the attention logits (None: plain scaled dot-product attention).

    Returns the updated streams and this layer's keys/values for all tokens seen (past + new), to cache.
    """
    attn0 = layers[streams[0].expert].self_attn
    head_dim, kv_groups = attn0.head_dim, attn0.num_key_value_groups
    n_kv = attn0.k_proj.out_features // head_dim
    n_q = n_kv * kv_groups
    queries, keys, values = [], [], []
    for s in streams:
        layer = layers[s.expert]
        x = layer.input_layernorm(s.hidden)
        queries.append(_heads(layer.self_attn.q_proj(x), n_q, head_dim))
        keys.append(_heads(layer.self_attn.k_proj(x), n_kv, head_dim))
        values.append(_heads(layer.self_attn.v_proj(x), n_kv, head_dim))
    q, k = apply_rotary_pos_emb(torch.cat(queries, 2), torch.cat(keys, 2), cos, sin)
    v = torch.cat(values, 2)
    if past is not None:
        k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
    k_all, v_all = k.repeat_interleave(kv_groups, 1), v.repeat_interleave(kv_groups, 1)
    if softcap is None:
        out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask[:, None], scale=head_dim**-0.5)
    else:  # Gemma's soft-capped logits, which fused attention kernels do not offer
        logits = torch.matmul(q, k_all.transpose(2, 3)) / math.sqrt(head_dim)
        logits = torch.tanh(logits / softcap) * softcap
        logits = logits.masked_fill(~mask[:, None], torch.finfo(logits.dtype).min)
        out = torch.matmul(F.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype), v_all)
    out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], n_q * head_dim)
    updated, start = [], 0
    for s in streams:
        layer, n = layers[s.expert], s.hidden.shape[1]
        h = s.hidden + layer.self_attn.o_proj(out[:, start : start + n])
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        updated.append(Stream(s.expert, h))
        start += n
    return updated, (k, v)


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's cos and sin (B, L, head_dim) for another base than the backbone's, computed in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=position_ids.device) / head_dim))
    freqs = position_ids[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class MixtureOfTransformers(nn.Module):
    """`experts[e][l]` is layer l of expert e; expert 0 is the VLM's Gemma decoder. `thetas` gives an
    expert its own RoPE base (the others use the backbone's `rotary`); `softcap` soft-caps attention logits."""

    def __init__(
        self,
        experts: list[nn.ModuleList],
        rotary: nn.Module,
        norms: list[nn.Module],
        thetas: dict[int, float] | None = None,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        depths = {len(e) for e in experts}
        if len(depths) != 1:
            raise ValueError(f"all experts need the same number of layers (got {sorted(depths)})")
        self.experts = nn.ModuleList(experts)
        self.rotary = rotary
        self.norms = nn.ModuleList(norms)
        self.n_layers = depths.pop()
        self.thetas = dict(thetas or {})
        self.softcap = softcap

    def _cos_sin(self, streams: list[Stream], position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not any(s.expert in self.thetas for s in streams):
            return self.rotary(streams[0].hidden, position_ids)
        head_dim = cast(GemmaDecoderLayer, cast(nn.ModuleList, self.experts[0])[0]).self_attn.head_dim
        cos, sin, start = [], [], 0
        for s in streams:
            ids = position_ids[:, start : start + s.hidden.shape[1]]
            if s.expert in self.thetas:
                c, n = rope_cos_sin(ids, head_dim, self.thetas[s.expert], s.hidden.dtype)
            else:
                c, n = self.rotary(s.hidden, ids)
            cos.append(c)
            sin.append(n)
            start += s.hidden.shape[1]
        return torch.cat(cos, 1), torch.cat(sin, 1)

    def forward(
        self,
        streams: list[Stream],
        position_ids: torch.Tensor,
        mask: torch.Tensor,
        cache: LayerCache | None = None,
        keep_cache: bool = False,
    ) -> tuple[list[torch.Tensor], LayerCache | None]:
        """Run all layers; returns each stream's final-normed output and, if asked, the per-layer keys/values.

        With `cache`, the streams are new tokens appended after an already computed prefix: `mask` covers
        (new tokens) x (prefix + new tokens) and `position_ids` only the new tokens.
        """
        cos, sin = self._cos_sin(streams, position_ids)
        new_cache: LayerCache = []
        for index in range(self.n_layers):
            # self.experts: one ModuleList of GemmaDecoderLayers per expert (ModuleList items are typed Module)
            layers = [cast(GemmaDecoderLayer, cast(nn.ModuleList, expert)[index]) for expert in self.experts]
            streams, kv = joint_layer(layers, streams, cos, sin, mask, cache[index] if cache else None, self.softcap)
            if keep_cache:
                new_cache.append(kv)
        outputs = [self.norms[s.expert](s.hidden) for s in streams]
        return outputs, (new_cache if keep_cache else None)
