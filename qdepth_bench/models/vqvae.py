"""The depth VQ-VAE (paper section 3.2): a 224 px relative depth map -> a 16x16 grid of 160-dim latents ->
the nearest of K = 256 codebook vectors -> decoded back to a depth map.

Loss = reconstruction (MSE) + codebook (||sg[z_e] - c||^2) + beta * commitment (||z_e - sg[c]||^2), beta =
0.25, with the straight-through estimator. Codes that no encoder output has chosen for a while are
restarted at random encoder outputs of the current batch, so the whole codebook stays in use.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import file_hash


@dataclass(frozen=True)
class VQVAEConfig:
    image_size: int = 224
    grid: int = 16
    codebook_size: int = 256
    code_dim: int = 160
    hidden: int = 128
    beta: float = 0.25
    #: a code unused for this many consecutive batches is restarted
    dead_after: int = 50

    @property
    def patch(self) -> int:
        return self.image_size // self.grid

    def to_dict(self) -> dict:
        return asdict(self)


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DepthVQVAE(nn.Module):
    codebook: nn.Parameter
    idle_batches: torch.Tensor

    def __init__(self, config: VQVAEConfig = VQVAEConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c.hidden, kernel_size=c.patch // 2, stride=c.patch // 2),  # 224 -> 32
            _Residual(c.hidden),
            nn.Conv2d(c.hidden, c.hidden, kernel_size=4, stride=2, padding=1),  # 32 -> 16
            _Residual(c.hidden),
            _Residual(c.hidden),
            nn.GELU(),
            nn.Conv2d(c.hidden, c.code_dim, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(c.code_dim, c.hidden, 3, padding=1),
            _Residual(c.hidden),
            _Residual(c.hidden),
            nn.GELU(),
            nn.ConvTranspose2d(c.hidden, c.hidden, kernel_size=4, stride=2, padding=1),  # 16 -> 32
            _Residual(c.hidden),
            nn.GELU(),
            nn.ConvTranspose2d(c.hidden, 1, kernel_size=c.patch // 2, stride=c.patch // 2),
        )  # 32 -> 224
        self.codebook = nn.Parameter(torch.randn(c.codebook_size, c.code_dim) * 0.1)
        self.register_buffer("idle_batches", torch.zeros(c.codebook_size, dtype=torch.long))

    def encode(self, depth: torch.Tensor) -> torch.Tensor:
        """(B, H, W) depth in [0, 1] -> (B, grid*grid, code_dim) continuous latents z_e."""
        z = self.encoder(depth[:, None] * 2 - 1)
        return z.flatten(2).transpose(1, 2)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each latent (B, N, D) -> (B, N)."""
        distance = z.pow(2).sum(-1, keepdim=True) - 2 * z @ self.codebook.T + self.codebook.pow(2).sum(-1)
        return distance.argmin(-1)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) code indices -> (B, H, W) depth in [0, 1] (roughly: the decoder is not clamped in training)."""
        return self.decode_latents(self.codebook[codes])

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        b, n, d = z.shape
        grid = self.config.grid
        x = self.decoder(z.transpose(1, 2).reshape(b, d, grid, grid))
        return (x[:, 0] + 1) / 2

    def forward(self, depth: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses and statistics of one batch of (B, H, W) relative depth maps in [0, 1]."""
        z = self.encode(depth)
        codes = self.nearest(z.detach())
        quantized = self.codebook[codes]
        codebook_loss = F.mse_loss(quantized, z.detach())
        commitment = F.mse_loss(z, quantized.detach())
        straight_through = z + (quantized - z).detach()
        reconstruction = self.decode_latents(straight_through)
        recon_loss = F.mse_loss(reconstruction, depth)
        usage = torch.bincount(codes.flatten(), minlength=self.config.codebook_size).float()
        probs = usage / usage.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return {
            "loss": recon_loss + codebook_loss + self.config.beta * commitment,
            "reconstruction": recon_loss,
            "codebook": codebook_loss,
            "commitment": commitment,
            "perplexity": perplexity,
            "codes_used": (usage > 0).sum(),
            "codes": codes,
            "latents": z.detach(),
        }

    @torch.no_grad()
    def restart_dead_codes(self, codes: torch.Tensor, latents: torch.Tensor) -> int:
        """Move codes idle for `dead_after` batches onto random latents of this batch; returns how many."""
        used = torch.zeros_like(self.idle_batches, dtype=torch.bool)
        used[codes.flatten()] = True
        self.idle_batches[used] = 0
        self.idle_batches[~used] += 1
        dead = (self.idle_batches >= self.config.dead_after).nonzero().flatten()
        if len(dead):
            pool = latents.reshape(-1, latents.shape[-1])
            pick = torch.randint(0, pool.shape[0], (len(dead),), device=pool.device)
            self.codebook.data[dead] = pool[pick]
            self.idle_batches[dead] = 0
        return len(dead)


def load_vqvae(folder: Path) -> tuple[DepthVQVAE, str]:
    """A trained VQ-VAE and the hash of its weights (recorded with the codes it makes)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise UserError(
            f"{folder} is not a trained VQ-VAE (model.safetensors + config.json); train one with "
            "`qdepth-bench train vqvae --recipe vqvae-libero-object`."
        )
    model = DepthVQVAE(VQVAEConfig(**json.loads((folder / "config.json").read_text())["vqvae"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), file_hash(folder / "model.safetensors")


class VQVAECodec:
    """A trained VQ-VAE as a policy's `core.policy.DepthCodec`: numpy in, numpy out, no gradients."""

    def __init__(self, model: DepthVQVAE) -> None:
        self.model = model

    @property
    def codebook_size(self) -> int:
        return self.model.config.codebook_size

    @torch.no_grad()
    def encode(self, relative: np.ndarray) -> np.ndarray:
        depth = torch.from_numpy(np.ascontiguousarray(relative, dtype=np.float32))
        return self.model.nearest(self.model.encode(depth)).numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.model.decode_codes(torch.from_numpy(np.asarray(codes, dtype=np.int64))).clamp(0, 1).numpy()
