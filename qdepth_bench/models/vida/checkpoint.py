"""Loading the released ViDA checkpoints (`video_depth_anything_{vits,vitl}.pth` and the metric variants).

The released files name their tensors after the reference code's modules; `convert` renames them to this
package's modules (and splits DINOv2's fused qkv projection into transformers' q/k/v projections), then the
model loads them strictly: a file with a missing or extra tensor is refused, not half-loaded.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import file_hash
from qdepth_bench.models.vida.config import PRESETS, VidaConfig, preset
from qdepth_bench.models.vida.model import VideoDepthAnything

#: trained for masked-image pretraining only; inference never reads it
UNUSED = ("pretrained.mask_token",)


def _offset(prefix: str, suffix: str) -> Callable[[re.Match[str]], str]:
    """A replacement that turns the reference's 1-based scratch numbering into a 0-based list index."""
    return lambda m: f"{prefix}{int(m.group(1)) - 1}{suffix.format(*m.groups()[1:])}"


#: (reference name pattern, our name), applied in order, the first match wins
RULES: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"^pretrained\.patch_embed\.proj\.", "backbone.patch_embed."),
    (r"^pretrained\.(cls_token|pos_embed)$", r"backbone.\1"),
    (r"^pretrained\.norm\.", "backbone.norm."),
    (r"^pretrained\.blocks\.(\d+)\.attn\.proj\.", r"backbone.layers.\1.attention.o_proj."),
    (r"^pretrained\.blocks\.(\d+)\.ls([12])\.gamma$", r"backbone.layers.\1.layer_scale\2.lambda1"),
    (r"^pretrained\.blocks\.(\d+)\.", r"backbone.layers.\1."),
    (r"^head\.projects\.(\d)\.", r"head.reassemble.\1.projection."),
    (r"^head\.resize_layers\.(\d)\.", r"head.reassemble.\1.resize."),
    (r"^head\.scratch\.layer(\d)_rn\.", _offset("head.convs.", ".")),
    (r"^head\.scratch\.refinenet(\d)\.out_conv\.", _offset("head.fusion.", ".projection.")),
    (
        r"^head\.scratch\.refinenet(\d)\.resConfUnit(\d)\.conv(\d)\.",
        _offset("head.fusion.", ".residual_layer{}.convolution{}."),
    ),
    (r"^head\.scratch\.output_conv1\.", "head.output.conv1."),
    (r"^head\.scratch\.output_conv2\.0\.", "head.output.conv2."),
    (r"^head\.scratch\.output_conv2\.2\.", "head.output.conv3."),
    (r"^head\.motion_modules\.(\d)\.temporal_transformer\.", r"head.temporal.\1."),
]
#: renames inside a temporal module
INNER = [(r"\.to_out\.0\.", ".to_out."), (r"\.pos_encoder\.pe$", ".pe"), (r"\.ff\.net\.0\.proj\.", ".ff.proj.")]
INNER += [(r"\.ff\.net\.2\.", ".ff.out.")]


def rename(name: str) -> str:
    """Our module's name for one tensor of a released checkpoint."""
    for pattern, replacement in RULES:
        renamed, hits = re.subn(pattern, replacement, name)
        if hits:
            for inner, target in INNER:
                renamed = re.sub(inner, target, renamed)
            return renamed
    raise UserError(f"the checkpoint has a tensor '{name}' that Video-Depth-Anything has no place for.")


def convert(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A released state dict -> this package's state dict (qkv split into q/k/v projections)."""
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in reference.items():
        if name in UNUSED:
            continue
        qkv = re.match(r"^pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", name)
        if qkv:
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                ours[f"backbone.layers.{qkv.group(1)}.attention.{part}.{qkv.group(2)}"] = chunk
            continue
        ours[rename(name)] = tensor
    return ours


def config_of(reference: dict[str, torch.Tensor], metric: bool) -> VidaConfig:
    """The released size whose backbone width matches the checkpoint's."""
    width = reference["pretrained.cls_token"].shape[-1] if "pretrained.cls_token" in reference else None
    for name, config in PRESETS.items():
        if config.embed_dim == width:
            return preset(name, metric)
    raise UserError(
        f"the checkpoint's backbone width {width} matches no released Video-Depth-Anything size "
        f"({', '.join(f'{n}: {c.embed_dim}' for n, c in PRESETS.items())}); is it a ViDA .pth file?"
    )


def load_state(model: VideoDepthAnything, reference: dict[str, torch.Tensor]) -> None:
    """Load released-format tensors into `model`, strictly (one clear line when names or shapes differ)."""
    converted = convert(reference)
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    extra = sorted(set(converted) - set(own))
    wrong = [k for k in set(own) & set(converted) if own[k].shape != converted[k].shape]
    if missing or extra or wrong:
        raise UserError(
            f"the checkpoint does not fit this Video-Depth-Anything size: {len(missing)} tensors missing "
            f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}), {len(wrong)} of another "
            f"shape (e.g. {sorted(wrong)[:2]}); pass the released vits/vitl file unmodified."
        )
    model.load_state_dict(converted, strict=True)


def load_checkpoint(path: Path) -> tuple[VideoDepthAnything, str]:
    """(model in eval mode, the file's hash as results identify checkpoints) from a released `.pth`; the
    metric variant when its file name says so."""
    if not path.is_file():
        raise UserError(f"--checkpoint {path} does not exist; download video_depth_anything_vits.pth (or _vitl) first.")
    try:
        reference = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} as a PyTorch checkpoint ({exc}).") from None
    model = VideoDepthAnything(config_of(reference, metric="metric" in path.name))
    load_state(model, reference)
    return model.eval(), file_hash(path)


def seeded_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Random tensors that are a pure function of each name and shape (a generator seeded by the name):
    matrices scaled by 1/sqrt(fan-in), 1-D norm and layer-scale weights near 1, the rest small. Stands in
    for released weights where they cannot be fetched (the parity fixtures, the depth benchmark); unlike
    torch's default initialisation it keeps ViDA's output away from the final ReLU's zero."""
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())))
        if len(shape) >= 2 and not key.endswith(("pos_embed", "cls_token", ".pe")):
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            out[key] = noise / fan_in**0.5
        elif key.endswith((".weight", ".gamma", ".lambda1")) and len(shape) == 1:
            out[key] = 1.0 + 0.1 * noise
        else:
            out[key] = 0.1 * noise
    return out
