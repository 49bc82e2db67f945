"""QDepth-VLA checkpoints: a folder with `config.json` (the model configuration and variant),
`model.safetensors` (the weights, VQ-VAE codebook included), `norm_stats.json` (the 1st/99th percentiles
used to scale state and actions to [-1, 1]) and, for real backbones, the backbone's tokenizer files.

A real PaliGemma folder (`--backbone PATH`, as published by Google / Hugging Face) is read with
transformers' own loader; its vision and text sizes replace those of the `full` configuration.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import file_hash
from qdepth_bench.core.policy import CHECKPOINT_WEIGHTS
from qdepth_bench.models.qdepth.config import QDepthConfig, TextConfig, VisionConfig, build_config
from qdepth_bench.models.qdepth.model import QDepthVLA
from qdepth_bench.models.qdepth.tokenizer import FolderTokenizer, HashWordTokenizer

CONFIG_FILE, WEIGHTS_FILE, STATS_FILE = "config.json", CHECKPOINT_WEIGHTS, "norm_stats.json"


@dataclass
class NormStats:
    """Per-dimension statistics of proprio state and actions in the training data. `kind` "bounds" (this
    project's, open-pi-zero's): low/high are the 1st/99th percentiles, values scaled to [-1, 1] and clipped.
    "zscore" (openpi's pi0): low/high hold mean/std, values become (x - mean) / (std + 1e-6)."""

    state_low: list[float]
    state_high: list[float]
    action_low: list[float]
    action_high: list[float]
    kind: str = "bounds"

    def _scale(self, x: np.ndarray, low: list[float], high: list[float]) -> np.ndarray:
        low_, high_ = np.asarray(low), np.asarray(high)
        if self.kind == "zscore":
            return (x - low_) / (high_ + 1e-6)
        return np.clip(2 * (x - low_) / np.maximum(high_ - low_, 1e-8) - 1, -1.0, 1.0)

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        return self._scale(state, self.state_low, self.state_high)

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        return self._scale(actions, self.action_low, self.action_high)

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        if self.kind == "zscore":
            return actions * (high + 1e-6) + low
        return (np.clip(actions, -1, 1) + 1) / 2 * (high - low) + low

    @classmethod
    def from_data(cls, state: np.ndarray, actions: np.ndarray) -> NormStats:
        """Percentiles over every frame (state: (N, S); actions: (N, A))."""

        def q(x: np.ndarray, p: float) -> list[float]:
            return np.percentile(x, p, axis=0).astype(float).tolist()

        return cls(q(state, 1), q(state, 99), q(actions, 1), q(actions, 99))

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> NormStats:
        return cls([-1.0] * state_dim, [1.0] * state_dim, [-1.0] * action_dim, [1.0] * action_dim)


def save_checkpoint(
    folder: Path,
    config: QDepthConfig,
    state: dict[str, torch.Tensor],
    stats: NormStats,
    variant: str,
    tokenizer: HashWordTokenizer | FolderTokenizer | None = None,
    extra: dict | None = None,
) -> Path:
    """Write config, weights and statistics (and a backbone's tokenizer files); returns the folder."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(_untie(weights), str(folder / WEIGHTS_FILE))
    meta = {"variant": variant, "model": config.to_dict(), **(extra or {})}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    (folder / STATS_FILE).write_text(json.dumps(dataclasses.asdict(stats), indent=2))
    if isinstance(tokenizer, FolderTokenizer):
        tokenizer.tokenizer.save_pretrained(str(folder))
    return folder


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory; copy any that do."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        ptr = tensor.data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out


@dataclass
class LoadedCheckpoint:
    model: QDepthVLA
    stats: NormStats
    tokenizer: HashWordTokenizer | FolderTokenizer
    variant: str
    weights_hash: str
    folder: Path
    #: trained with its data's state zero-padded to the model's width (a recipe's `model.overrides.state_dim`,
    #: so that stages on datasets of different state widths share one architecture): evaluation pads it too
    pads_state: bool = False


def load_checkpoint(folder: Path, device: str = "cpu") -> LoadedCheckpoint:
    """Rebuild the model from config.json and load its weights; every problem is one line naming the fix."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, STATS_FILE) if not (folder / f).is_file()]
    if missing:
        raise UserError(
            f"{folder} is not a QDepth-VLA checkpoint (missing {', '.join(missing)}); train one with "
            "`qdepth-bench train policy` or pass --policy-arg checkpoint=FOLDER."
        )
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text())
        config = QDepthConfig.from_dict(meta["model"])
        stats = NormStats(**json.loads((folder / STATS_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{folder / CONFIG_FILE} or {STATS_FILE} is damaged ({exc}); re-save the checkpoint.") from None
    model = QDepthVLA(config)
    try:
        weights = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{folder / WEIGHTS_FILE} is corrupt ({exc}); re-download or re-train it.") from None
    expected = model.state_dict()
    for name, tensor in weights.items():
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(
                f"{folder / WEIGHTS_FILE} does not match its config.json: {name} has shape {tuple(tensor.shape)} "
                f"in the weights and {tuple(expected[name].shape)} in the model config.json describes; the config "
                "was edited or belongs to another checkpoint: restore the checkpoint's own config.json."
            )
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        names = (result.missing_keys or result.unexpected_keys)[:3]
        raise UserError(
            f"{folder / WEIGHTS_FILE} does not match its config.json (e.g. {', '.join(names)}); "
            "the checkpoint is damaged or was written by another version."
        )
    model.to(device).eval()
    tokenizer = make_tokenizer(config, folder)
    return LoadedCheckpoint(
        model,
        stats,
        tokenizer,
        meta.get("variant", "qdepth"),
        file_hash(folder / WEIGHTS_FILE),
        folder,
        len(stats.state_low) < config.state_dim,
    )


def make_tokenizer(config: QDepthConfig, folder: Path | None) -> HashWordTokenizer | FolderTokenizer:
    if config.tokenizer == "hash":
        return HashWordTokenizer(config.text.vocab_size - 3, config.max_text_tokens)
    if folder is None:
        raise UserError("this configuration uses its backbone folder's tokenizer; pass --backbone PATH.")
    return FolderTokenizer(folder, config.max_text_tokens)


def config_from_paligemma(folder: Path, variant: str = "qdepth", **overrides) -> QDepthConfig:
    """The `full` configuration with the vision/text sizes of a PaliGemma model folder."""
    from transformers import PaliGemmaConfig

    pali = PaliGemmaConfig.from_pretrained(str(folder))
    v: Any = pali.vision_config
    t: Any = pali.text_config
    return build_config(
        "full",
        variant,
        tokenizer="folder",
        vision=VisionConfig(
            v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads, v.image_size, v.patch_size
        ),
        text=TextConfig(
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.num_key_value_heads,
            t.head_dim,
            t.vocab_size,
        ),
        **overrides,
    )


def model_with_backbone(folder: Path, variant: str = "qdepth", **overrides) -> QDepthVLA:
    """QDepth-VLA whose VLM is the PaliGemma in `folder` (weights loaded); the experts start fresh."""
    from transformers import PaliGemmaForConditionalGeneration

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(
            f"--backbone {folder} has no config.json; point it at a PaliGemma model folder "
            "(e.g. a local copy of google/paligemma-3b-pt-224)."
        )
    config = config_from_paligemma(folder, variant, **overrides)
    pali = PaliGemmaForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32)
    return QDepthVLA(config, backbone=pali.model)
