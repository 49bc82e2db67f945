"""QDepth-VLA configuration: backbone, experts, depth branch, flow matching, and the ablation variants.

The sizes are named data: `full` is the paper's (PaliGemma-3B backbone, 18-layer experts of width 1024,
MLP 4096, 8 heads; Table 1), `medium` and `tiny` are the same code at sizes a CPU can run. Every expert
shares the backbone's head layout (number of query heads, key/value heads, head dimension) because their
tokens are attended jointly, layer by layer.

Variants (paper Table 6) are switches on one architecture:
  depth_branch   "expert" (the depth expert), "vlm" (depth tokens predicted from the VLM's image-token
                 outputs, no depth expert), or "none" (open-pi0: no depth branch at all)
  depth_target   "tokens" (cross-entropy over the frozen VQ-VAE codebook) or "pixels" (depth regression)
  mask           "hybrid" (proprio does not see depth) or "causal" (proprio sees depth too)
  depth_loss_weight  lambda_0 of the co-training loss (0 for "w/o depth loss")

Conventions in which published pi0 implementations differ from this project's own are fields too (defaults:
this project's), so a checkpoint of another implementation loads into this one model with its math intact
(see `models/qdepth/conventions.py` for each implementation's values):
  velocity           what the action expert predicts: "noise_minus_data" (this project) or
                     "data_minus_noise" (open-pi-zero); integration runs from noise at tau=0 to data at tau=1
  flow_sig_min       sigma_min of the conditional flow: x_t = (1 - (1 - sigma) t) noise + t data
  time_embedding     "periods" (pi0's 4e-3..4 periods) or "log_frequencies" (frequencies exp(-ln(P) i/(h-1)),
                     P = time_max_period)
  time_input         the time the embedding reads: "tau" (0 at noise, this project and open-pi-zero) or
                     "one_minus_tau" (openpi counts its flow time from noise at 1)
  time_float64       the time embedding is computed in float64, then cast (openpi)
  time_first         the action encoder concatenates [time, action] instead of [action, time]
  expert_input_scale the action/depth experts' input tokens are multiplied by sqrt(width), as Gemma scales
                     its embeddings
  attn_softcap       tanh soft-capping of attention logits (cap * tanh(logit / cap)); None: none
  action_rope_theta  RoPE base of the action expert's tokens; None: the backbone's
  positions          "consecutive" over real tokens, or "per_expert" (each expert counts its own tokens
                     from 1; the prefix counts padding too)
  final_action_clip  clamp the integrated (normalised) actions to +-this; None: no clamp
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEPTH_BRANCHES = ("expert", "vlm", "none")
VELOCITIES = ("noise_minus_data", "data_minus_noise")
TIME_EMBEDDINGS = ("periods", "log_frequencies")
TIME_INPUTS = ("tau", "one_minus_tau")
POSITIONS = ("consecutive", "per_expert")
DEPTH_TARGETS = ("tokens", "pixels")
MASKS = ("hybrid", "causal")


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP image encoder: a 224 px image in 14 px patches gives the 16x16 = 256 image tokens."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14


@dataclass(frozen=True)
class TextConfig:
    """Gemma decoder of the VLM (and the head layout every expert shares)."""

    hidden_size: int = 2048
    intermediate_size: int = 16384
    num_hidden_layers: int = 18
    num_attention_heads: int = 8
    num_key_value_heads: int = 1
    head_dim: int = 256
    vocab_size: int = 257216


@dataclass(frozen=True)
class ExpertConfig:
    """One expert transformer (action or depth): its own norms, attention projections and MLP per layer."""

    hidden_size: int = 1024
    intermediate_size: int = 4096


@dataclass(frozen=True)
class QDepthConfig:
    """Everything that defines a QDepth-VLA model; saved as config.json with its checkpoint."""

    size: str = "full"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    action_expert: ExpertConfig = field(default_factory=ExpertConfig)
    depth_expert: ExpertConfig = field(default_factory=ExpertConfig)
    #: "hash" (the project's offline word tokenizer) or "folder" (the tokenizer of the backbone folder)
    tokenizer: str = "folder"
    max_text_tokens: int = 20
    state_dim: int = 8
    action_dim: int = 7
    chunk_size: int = 4
    # depth branch
    depth_branch: str = "expert"
    depth_target: str = "tokens"
    mask: str = "hybrid"
    codebook_size: int = 256
    code_dim: int = 160
    depth_grid: int = 16
    depth_temperature: float = 1.0
    depth_loss_weight: float = 0.01
    depth_loss_decay: float = 0.9995
    # flow matching (pi0's): tau ~ s * (1 - Beta(a, b)), emphasising small (noisy) tau
    flow_beta_a: float = 1.5
    flow_beta_b: float = 1.0
    flow_s: float = 0.999
    num_integration_steps: int = 10
    # conventions of other pi0 implementations (module docstring)
    velocity: str = "noise_minus_data"
    flow_sig_min: float = 0.0
    time_embedding: str = "periods"
    time_max_period: float = 10000.0
    time_input: str = "tau"
    time_float64: bool = False
    time_first: bool = False
    expert_input_scale: bool = False
    attn_softcap: float | None = None
    action_rope_theta: float | None = None
    positions: str = "consecutive"
    final_action_clip: float | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.depth_branch, DEPTH_BRANCHES, "depth_branch"),
            (self.depth_target, DEPTH_TARGETS, "depth_target"),
            (self.mask, MASKS, "mask"),
            (self.velocity, VELOCITIES, "velocity"),
            (self.time_embedding, TIME_EMBEDDINGS, "time_embedding"),
            (self.time_input, TIME_INPUTS, "time_input"),
            (self.positions, POSITIONS, "positions"),
        ]
        for value, allowed, name in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
        grid = self.vision.image_size // self.vision.patch_size
        if grid != self.depth_grid:
            raise ValueError(f"image tokens form a {grid}x{grid} grid but depth_grid is {self.depth_grid}")

    @property
    def has_depth(self) -> bool:
        return self.depth_branch != "none"

    @property
    def has_depth_tokens_in_sequence(self) -> bool:
        """Only the depth expert adds a block of depth tokens to the joint sequence."""
        return self.depth_branch == "expert"

    @property
    def num_image_tokens(self) -> int:
        return self.depth_grid * self.depth_grid

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QDepthConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown QDepth config keys: {', '.join(unknown)}")
        nested = {
            "vision": VisionConfig,
            "text": TextConfig,
            "action_expert": ExpertConfig,
            "depth_expert": ExpertConfig,
        }
        values = {k: nested[k](**v) if k in nested and isinstance(v, dict) else v for k, v in data.items()}
        return cls(**values)

    def replace(self, **changes: Any) -> QDepthConfig:
        return dataclasses.replace(self, **changes)


#: Named sizes. `full` matches the paper; the others keep its shape at CPU scale.
SIZES: dict[str, QDepthConfig] = {
    "full": QDepthConfig(),
    "medium": QDepthConfig(
        size="medium",
        tokenizer="hash",
        vision=VisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4),
        text=TextConfig(
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=6,
            num_attention_heads=8,
            num_key_value_heads=1,
            head_dim=64,
            vocab_size=4099,
        ),
        action_expert=ExpertConfig(256, 1024),
        depth_expert=ExpertConfig(256, 1024),
    ),
    "tiny": QDepthConfig(
        size="tiny",
        tokenizer="hash",
        vision=VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2),
        text=TextConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            vocab_size=4099,
        ),
        action_expert=ExpertConfig(32, 64),
        depth_expert=ExpertConfig(32, 64),
    ),
}

#: The ablation variants of the paper as changes to a base configuration.
VARIANTS: dict[str, dict[str, Any]] = {
    "qdepth": {},
    "qdepth-no-depth-loss": {"depth_loss_weight": 0.0},
    "qdepth-no-depth-expert": {"depth_branch": "vlm"},
    "qdepth-pixel": {"depth_target": "pixels"},
    "qdepth-causal": {"mask": "causal"},
    "pi0": {"depth_branch": "none"},
}


def build_config(size: str = "tiny", variant: str = "qdepth", **overrides: Any) -> QDepthConfig:
    """A named size with a named variant applied, then any field overrides."""
    if size not in SIZES:
        raise KeyError(f"unknown QDepth size {size!r}: {', '.join(SIZES)}")
    if variant not in VARIANTS:
        raise KeyError(f"unknown QDepth variant {variant!r}: {', '.join(VARIANTS)}")
    return SIZES[size].replace(**VARIANTS[variant], **overrides)
