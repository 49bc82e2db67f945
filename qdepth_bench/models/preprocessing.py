"""How images enter the models: (B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1], PaliGemma's range.
Training, inference and the depth figure all go through here, so the three can never disagree."""

from __future__ import annotations

import numpy as np
import torch


def images_to_model(images: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """Channels first and scaled to [-1, 1] (x / 127.5 - 1)."""
    tensor = torch.from_numpy(images)
    if device is not None:
        tensor = tensor.to(device)
    return tensor.permute(0, 3, 1, 2).float() / 127.5 - 1.0
