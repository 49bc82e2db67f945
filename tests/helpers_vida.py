"""The reduced ViDA size and seeded weights the parity fixtures in tests/data/vida were made with.

Weights are a pure function of each tensor's released name and shape, so the fixture holds no weights:
the scratch run of the reference code loaded exactly these tensors (see tests/data/vida/README.md).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "data" / "vida"

#: backbone 32 wide, 4 blocks, 2 heads, all four blocks feed the head; the head's temporal modules need
#: multiples of 32 channels (GroupNorm with 32 groups), so 32 is the smallest width they take
TINY = dict(
    embed_dim=32,
    depth=4,
    num_heads=2,
    layers=(0, 1, 2, 3),
    features=32,
    out_channels=(16, 32, 32, 32),
    image_size=42,
)


def read_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """A committed key list (`name shape` per line, shape as comma-separated ints)."""
    shapes = {}
    for line in (FIXTURES / f"keys_{name}.txt").read_text().splitlines():
        key, shape = line.split()
        shapes[key] = tuple(int(s) for s in shape.split(",") if s)
    return shapes


def seeded_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Released-format tensors drawn from a generator seeded by each name: matrices scaled by 1/sqrt(fan-in),
    norm and layer-scale weights near 1, everything else small."""
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())))
        if len(shape) >= 2 and not key.endswith(("pos_embed", "cls_token", ".pe")):
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            out[key] = noise / fan_in**0.5
        elif key.endswith((".weight", ".gamma")) and len(shape) == 1:
            out[key] = 1.0 + 0.1 * noise
        else:
            out[key] = 0.1 * noise
    return out
