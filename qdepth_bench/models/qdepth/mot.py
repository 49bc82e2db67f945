"""Mixture of transformers: per layer, each expert (VLM, depth, action) applies its own norms, Q/K/V/O
projections and MLP to its own tokens, and attention runs jointly over all tokens under one block mask.

Expert layers are transformers' `GemmaDecoderLayer`s (the VLM's are the Gemma decoder's own), so a real
PaliGemma checkpoint plugs in unchanged; this module only runs them jointly. Query/key/value heads of all
experts share one layout (heads, key/value heads, head dim), which is what makes the joint attention a
single attention over the concatenated sequence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
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


class JointLayer(nn.Module):
    """Layer i of every expert, run as one unit: the module whose `forward` a sharding wrapper (FSDP2) hooks
    to gather these experts' weights just before the layer runs and free them after. `checkpointing`
    recomputes the layer's activations in the backward pass instead of keeping them (training memory)."""

    def __init__(self, layers: list[GemmaDecoderLayer], softcap: float | None = None) -> None:
        super().__init__()
        self.experts = nn.ModuleList(layers)
        self.softcap = softcap
        self.checkpointing = False

    def forward(
        self,
        hidden: list[torch.Tensor],
        expert: list[int],
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """`hidden[j]` are the tokens of stream j, handled by expert `expert[j]`; `cos`/`sin` cover the
        streams' tokens; `mask` is (B, L_new, L_past + L_new). Returns the updated hidden states and this
        layer's keys/values for all tokens seen (past + new), to cache."""
        if self.checkpointing and torch.is_grad_enabled():
            return cast(
                tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                checkpoint(self._run, hidden, expert, cos, sin, mask, past, use_reentrant=False),
            )
        return self._run(hidden, expert, cos, sin, mask, past)

    def _layer(self, expert: int) -> GemmaDecoderLayer:
        return cast(GemmaDecoderLayer, self.experts[expert])

    def _run(
        self,
        hidden: list[torch.Tensor],
        expert: list[int],
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        attn0 = self._layer(expert[0]).self_attn
        head_dim, kv_groups = attn0.head_dim, attn0.num_key_value_groups
        n_kv = attn0.k_proj.out_features // head_dim
        n_q = n_kv * kv_groups
        queries, keys, values = [], [], []
        for h, e in zip(hidden, expert, strict=True):
            layer = self._layer(e)
            x = layer.input_layernorm(h)
            queries.append(_heads(layer.self_attn.q_proj(x), n_q, head_dim))
            keys.append(_heads(layer.self_attn.k_proj(x), n_kv, head_dim))
            values.append(_heads(layer.self_attn.v_proj(x), n_kv, head_dim))
        q, k = apply_rotary_pos_emb(torch.cat(queries, 2), torch.cat(keys, 2), cos, sin)
        v = torch.cat(values, 2)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        k_all, v_all = k.repeat_interleave(kv_groups, 1), v.repeat_interleave(kv_groups, 1)
        if self.softcap is None:
            out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask[:, None], scale=head_dim**-0.5)
        else:  # Gemma's soft-capped logits, which fused attention kernels do not offer
            logits = torch.matmul(q, k_all.transpose(2, 3)) / math.sqrt(head_dim)
            logits = torch.tanh(logits / self.softcap) * self.softcap
            logits = logits.masked_fill(~mask[:, None], torch.finfo(logits.dtype).min)
            out = torch.matmul(F.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype), v_all)
        out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], n_q * head_dim)
        updated, start = [], 0
        for h, e in zip(hidden, expert, strict=True):
            layer, n = self._layer(e), h.shape[1]
            h = h + layer.self_attn.o_proj(out[:, start : start + n])
            updated.append(h + layer.mlp(layer.post_attention_layernorm(h)))
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
    expert its own RoPE base (the others use the backbone's `rotary`); `softcap` soft-caps attention logits.

    The layers are held per depth (`layers[l]`, a `JointLayer` of every expert's layer l) because that is
    the unit that runs; saved and loaded weights keep the per-expert names `experts.{e}.{l}.*` (a real
    PaliGemma's layout, and every checkpoint's), translated by the state-dict hooks below."""

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
        self.n_layers = depths.pop()
        self.n_experts = len(experts)
        self.layers = nn.ModuleList(
            JointLayer([cast(GemmaDecoderLayer, e[i]) for e in experts], softcap) for i in range(self.n_layers)
        )
        self.rotary = rotary
        self.norms = nn.ModuleList(norms)
        self.thetas = dict(thetas or {})
        self.register_state_dict_post_hook(_expert_major_keys)
        self.register_load_state_dict_pre_hook(_layer_major_keys)

    @property
    def experts(self) -> nn.ModuleList:
        """Per expert, its layers in order (a view of `layers`; the modules are the same objects)."""
        return nn.ModuleList(
            nn.ModuleList(cast(JointLayer, layer).experts[e] for layer in self.layers) for e in range(self.n_experts)
        )

    def set_checkpointing(self, on: bool) -> None:
        """Recompute each joint layer's activations in the backward pass (less memory, about a third more
        compute) instead of keeping them."""
        for layer in self.layers:
            cast(JointLayer, layer).checkpointing = on

    def _cos_sin(self, streams: list[Stream], position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not any(s.expert in self.thetas for s in streams):
            return self.rotary(streams[0].hidden, position_ids)
        head_dim = cast(JointLayer, self.layers[0])._layer(0).self_attn.head_dim
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
        hidden, expert = [s.hidden for s in streams], [s.expert for s in streams]
        new_cache: LayerCache = []
        for index, layer in enumerate(self.layers):
            hidden, kv = layer(hidden, expert, cos, sin, mask, cache[index] if cache else None)
            if keep_cache:
                new_cache.append(kv)
        outputs = [self.norms[e](h) for e, h in zip(expert, hidden, strict=True)]
        return outputs, (new_cache if keep_cache else None)


_LAYER_MAJOR = re.compile(r"layers\.(\d+)\.experts\.(\d+)\.(.*)")
_EXPERT_MAJOR = re.compile(r"experts\.(\d+)\.(\d+)\.(.*)")


def _expert_major_keys(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """`layers.{l}.experts.{e}.*` -> `experts.{e}.{l}.*`, in the order the per-expert layout lists them."""
    ours = [k for k in state if k.startswith(prefix)]
    renamed: dict[tuple[int, int, int], tuple[str, Any]] = {}
    rest: list[tuple[str, Any]] = []
    for position, key in enumerate(ours):
        value = state.pop(key)
        match = _LAYER_MAJOR.fullmatch(key[len(prefix) :])
        if match is None:
            rest.append((key, value))
        else:
            layer, expert, name = int(match[1]), int(match[2]), match[3]
            renamed[(expert, layer, position)] = (f"{prefix}experts.{expert}.{layer}.{name}", value)
    for _, (key, value) in sorted(renamed.items()):
        state[key] = value
    for key, value in rest:
        state[key] = value


def _layer_major_keys(
    module: nn.Module,
    state: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """`experts.{e}.{l}.*` -> `layers.{l}.experts.{e}.*` (what `_expert_major_keys` wrote, read back)."""
    for key in [k for k in state if k.startswith(prefix + "experts.")]:
        match = _EXPERT_MAJOR.fullmatch(key[len(prefix) :])
        if match is not None:
            state[f"{prefix}layers.{match[2]}.experts.{match[1]}.{match[3]}"] = state.pop(key)
