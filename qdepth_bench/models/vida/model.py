"""The Video-Depth-Anything network: DINOv2 features of every frame, a DPT head whose two deepest feature
maps and two coarsest fusion outputs pass through temporal attention across the frames of a window.

Built from transformers' DINOv2 layers and Depth-Anything reassemble/fusion/output blocks, which compute
exactly what the reference's own copies compute; what transformers lacks is written here: the patch/position
embedding (the reference resamples its position grid with a 0.1 offset that transformers' DINOv2 does not
use) and the temporal module. Names differ from the released checkpoints; `checkpoint.py` maps them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DepthAnythingConfig, Dinov2Config
from transformers.models.depth_anything.modeling_depth_anything import (
    DepthAnythingDepthEstimationHead,
    DepthAnythingFeatureFusionLayer,
    DepthAnythingReassembleLayer,
)
from transformers.models.dinov2.modeling_dinov2 import Dinov2Layer

from qdepth_bench.models.vida.config import VidaConfig

PATCH = 14
#: the temporal modules' fixed shape in every released checkpoint
TEMPORAL_HEADS = 8
TEMPORAL_GROUPS = 32


def sinusoid_table(max_len: int, dim: int) -> torch.Tensor:
    """(1, max_len, dim) absolute position code of the frames in a window (sin on even, cos on odd channels)."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, max_len, dim)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


class Backbone(nn.Module):
    """DINOv2 ViT returning the normalised patch tokens of four blocks."""

    def __init__(self, config: VidaConfig) -> None:
        super().__init__()
        self.layers_out = config.layers
        self.patch_embed = nn.Conv2d(3, config.embed_dim, kernel_size=PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid**2 + 1, config.embed_dim))
        dino = Dinov2Config(
            hidden_size=config.embed_dim,
            num_attention_heads=config.num_heads,
            mlp_ratio=4,
            layerscale_value=1.0,
            layer_norm_eps=1e-6,
            qkv_bias=True,
            hidden_act="gelu",
        )
        dino._attn_implementation = "sdpa"  # fused attention: same result as eager within float32 rounding
        self.layers = nn.ModuleList(Dinov2Layer(dino) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.embed_dim, eps=1e-6)

    def position(self, rows: int, cols: int) -> torch.Tensor:
        """The position code for a rows x cols patch grid: the pretrained square grid resampled bicubically
        with DINOv2's 0.1-patch offset (kept so that released weights see the codes they were trained on)."""
        grid = self.pos_embed.shape[1] - 1
        if rows * cols == grid and rows == cols:
            return self.pos_embed
        side = int(math.sqrt(grid))
        pos = self.pos_embed.float()
        patch_pos = F.interpolate(
            pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2),
            scale_factor=((rows + 0.1) / side, (cols + 0.1) / side),
            mode="bicubic",
            antialias=False,
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(self.pos_embed.dtype)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) normalised images -> four (N, H/14 * W/14, D) token maps."""
        rows, cols = images.shape[2] // PATCH, images.shape[3] // PATCH
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.position(rows, cols).to(x.dtype)
        taken = []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in self.layers_out:
                taken.append(self.norm(x)[:, 1:])
        return taken


class TemporalAttention(nn.Module):
    """Self-attention along time at every pixel, after adding the frame-position code."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.pe: torch.Tensor
        self.register_buffer("pe", sinusoid_table(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B * pixels, T, C)."""
        x = x + self.pe[:, : x.shape[1]].to(x.dtype)
        q, k, v = (self._heads(proj(x)) for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(2))

    @staticmethod
    def _heads(x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (TEMPORAL_HEADS, -1)).transpose(1, 2)


class GegluFeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim * 8)
        self.out = nn.Linear(dim * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(hidden * F.gelu(gate))


class TemporalBlock(nn.Module):
    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalAttention(dim, max_len) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.ff = GegluFeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalModule(nn.Module):
    """Residual temporal transformer over a (B*T, C, H, W) feature map: what makes ViDA's depth consistent
    from frame to frame within a window."""

    def __init__(self, channels: int, max_len: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(TEMPORAL_GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(channels, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bt, channels, height, width = x.shape
        h = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(bt, height * width, channels))
        # (B*T, P, C) -> (B*P, T, C): attention runs along time at each pixel
        h = h.unflatten(0, (-1, frames)).transpose(1, 2).flatten(0, 1)
        for block in self.transformer_blocks:
            h = block(h)
        h = h.unflatten(0, (-1, height * width)).transpose(1, 2).flatten(0, 1)
        h = self.proj_out(h).reshape(bt, height, width, channels).permute(0, 3, 1, 2)
        return h + x


class TemporalDptHead(nn.Module):
    """Depth-Anything's DPT head with temporal modules on layers 3-4 and on the two coarsest fusion outputs."""

    def __init__(self, config: VidaConfig) -> None:
        super().__init__()
        dpt = DepthAnythingConfig(
            reassemble_hidden_size=config.embed_dim,
            neck_hidden_sizes=list(config.out_channels),
            fusion_hidden_size=config.features,
            patch_size=PATCH,
            head_hidden_size=32,
            depth_estimation_type="relative",
            max_depth=1,
        )
        factors = (4, 2, 1, 0.5)
        self.reassemble = nn.ModuleList(
            DepthAnythingReassembleLayer(dpt, channels, factor)
            for channels, factor in zip(config.out_channels, factors, strict=True)
        )
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, config.features, kernel_size=3, padding=1, bias=False)
            for channels in config.out_channels
        )
        self.fusion = nn.ModuleList(DepthAnythingFeatureFusionLayer(dpt) for _ in range(4))
        channels = (config.out_channels[2], config.out_channels[3], config.features, config.features)
        self.temporal = nn.ModuleList(TemporalModule(c, config.num_frames) for c in channels)
        self.output = DepthAnythingDepthEstimationHead(dpt)

    def forward(self, tokens: list[torch.Tensor], rows: int, cols: int, frames: int) -> torch.Tensor:
        maps = [
            layer(x.transpose(1, 2).reshape(x.shape[0], x.shape[2], rows, cols))
            for layer, x in zip(self.reassemble, tokens, strict=True)
        ]
        maps[2] = self.temporal[0](maps[2], frames)
        maps[3] = self.temporal[1](maps[3], frames)
        rn = [conv(m) for conv, m in zip(self.convs, maps, strict=True)]
        path = self.temporal[2](self.fusion[3](rn[3], size=rn[2].shape[2:]), frames)
        path = self.temporal[3](self.fusion[2](path, rn[2], size=rn[1].shape[2:]), frames)
        path = self.fusion[1](path, rn[1], size=rn[0].shape[2:])
        path = self.fusion[0](path, rn[0])
        return self.output([path], rows, cols)


class VideoDepthAnything(nn.Module):
    """(B, T, 3, H, W) normalised frames (H, W multiples of 14, T <= num_frames) -> (B, T, H, W) relative
    inverse depth (disparity: larger is nearer), or metres for the metric checkpoints."""

    def __init__(self, config: VidaConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.head = TemporalDptHead(config)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, length, _, height, width = frames.shape
        tokens = self.backbone(frames.flatten(0, 1))
        depth = self.head(tokens, height // PATCH, width // PATCH, length).unsqueeze(1)
        depth = F.relu(F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=True))
        return depth.squeeze(1).unflatten(0, (batch, length))
