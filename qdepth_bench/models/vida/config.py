"""Sizes of Video-Depth-Anything, as the released checkpoints fix them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from qdepth_bench.core.errors import UserError


@dataclass(frozen=True)
class VidaConfig:
    """One ViDA size. The backbone is a DINOv2 ViT with 14-pixel patches; `layers` are the four blocks whose
    outputs feed the DPT head; the head's temporal attention covers at most `num_frames` frames."""

    embed_dim: int
    depth: int
    num_heads: int
    layers: tuple[int, int, int, int]
    features: int
    out_channels: tuple[int, int, int, int]
    image_size: int = 518  # the pretrained position grid is image_size // 14 patches square
    num_frames: int = 32
    metric: bool = False  # metric checkpoints predict metres: windows are joined without scale/shift alignment

    @property
    def grid(self) -> int:
        return self.image_size // 14


#: the released sizes (vitb was never released with weights, so it is not offered)
PRESETS: dict[str, VidaConfig] = {
    "vits": VidaConfig(384, 12, 6, (2, 5, 8, 11), 64, (48, 96, 192, 384)),
    "vitl": VidaConfig(1024, 24, 16, (4, 11, 17, 23), 256, (256, 512, 1024, 1024)),
}


def preset(name: str, metric: bool = False) -> VidaConfig:
    """The config of a released size by name ("vits" or "vitl")."""
    if name not in PRESETS:
        raise UserError(f"Video-Depth-Anything comes in sizes {', '.join(PRESETS)} (got {name!r}).")
    return replace(PRESETS[name], metric=metric)
