"""Depth outputs of QDepth-VLA: the 256 depth-position outputs become a 16x16 grid, a shallow CNN decodes
it into 160-dim latents, and those are scored against the frozen VQ-VAE codebook (paper eq. 3-4):
l_ik = -||x_i - c_k||^2 / tau, with cross-entropy against the codes of the ground-truth depth. The pixel
ablation instead regresses the depth map itself from the same decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GridDecoder(nn.Module):
    """Token outputs (B, g*g, width) -> latents (B, g*g, code_dim) through a shallow residual CNN."""

    def __init__(self, width: int, code_dim: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.proj = nn.Linear(width, code_dim)
        self.cnn = nn.Sequential(
            nn.Conv2d(code_dim, code_dim, 3, padding=1), nn.GELU(), nn.Conv2d(code_dim, code_dim, 3, padding=1)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, n, _ = hidden.shape
        x = self.proj(hidden).transpose(1, 2).reshape(b, -1, self.grid, self.grid)
        x = x + self.cnn(x)
        return x.flatten(2).transpose(1, 2)


class DepthTokenHead(nn.Module):
    """Predicts VQ-VAE depth codes. The codebook is a frozen buffer loaded from the trained VQ-VAE."""

    codebook: torch.Tensor

    def __init__(self, width: int, code_dim: int, grid: int, codebook_size: int, temperature: float) -> None:
        super().__init__()
        self.decoder = GridDecoder(width, code_dim, grid)
        self.temperature = temperature
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim))

    def set_codebook(self, codebook: torch.Tensor) -> None:
        if codebook.shape != self.codebook.shape:
            raise ValueError(f"codebook of shape {tuple(codebook.shape)} does not fit {tuple(self.codebook.shape)}")
        self.codebook.copy_(codebook)

    def latents(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, N, K) logits: negative squared distance of each predicted latent to each code, over tau; in
        float32 like the codebook (a buffer, which bf16 training does not cast), whatever the compute dtype."""
        x = self.latents(hidden).float()
        distance = x.pow(2).sum(-1, keepdim=True) - 2 * x @ self.codebook.T + self.codebook.pow(2).sum(-1)[None, None]
        return -distance / self.temperature

    def loss(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        logits = self.logits(hidden)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1).long())

    def predict_codes(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.logits(hidden).argmax(-1)


class DepthPixelHead(nn.Module):
    """The "w/o pixel prediction" ablation's opposite: regress relative depth per pixel, patch by patch."""

    def __init__(self, width: int, code_dim: int, grid: int, patch: int) -> None:
        super().__init__()
        self.decoder = GridDecoder(width, code_dim, grid)
        self.to_pixels = nn.Linear(code_dim, patch * patch)
        self.grid, self.patch = grid, patch

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, H, W) depth with H = W = grid * patch."""
        b = hidden.shape[0]
        pixels = self.to_pixels(self.decoder(hidden))  # (B, g*g, p*p)
        pixels = pixels.view(b, self.grid, self.grid, self.patch, self.patch)
        return pixels.permute(0, 1, 3, 2, 4).reshape(b, self.grid * self.patch, self.grid * self.patch)

    def loss(self, hidden: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.predict(hidden), depth)
