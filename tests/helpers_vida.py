"""The reduced ViDA size the parity fixtures in tests/data/vida were made with, and the committed key lists.

The fixture holds no weights: `checkpoint.seeded_weights` makes them from each tensor's released name and
shape, and the scratch run of the reference code loaded exactly those (see tests/data/vida/README.md).
"""

from __future__ import annotations

from pathlib import Path

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
