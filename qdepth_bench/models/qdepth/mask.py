"""The block attention masks of QDepth-VLA (paper Fig. 1b), as data and as boolean tensors.

Blocks: P (image + text prefix), D (depth tokens), S (proprio), A (noisy action chunk). A row lists what a
block's queries may attend to; every block attends to itself bidirectionally.

  hybrid (the paper's):  P->P   D->P,D   S->P,S     A->P,D,S,A
  causal (ablation):     P->P   D->P,D   S->P,D,S   A->P,D,S,A

Without a depth block (open-pi0 and the "w/o depth expert" variant) the same rules apply minus D, which is
pi0's mask. Because P and D never attend to S or A, their keys and values are the same at every flow
integration step and are computed once per chunk.
"""

from __future__ import annotations

import torch

BLOCKS = ("P", "D", "S", "A")

RULES: dict[str, dict[str, tuple[str, ...]]] = {
    "hybrid": {"P": ("P",), "D": ("P", "D"), "S": ("P", "S"), "A": ("P", "D", "S", "A")},
    "causal": {"P": ("P",), "D": ("P", "D"), "S": ("P", "D", "S"), "A": ("P", "D", "S", "A")},
}


def block_mask(kind: str, lengths: dict[str, int], prefix_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (B or 1, L, L) mask, True where a query (row) may attend to a key (column).

    `lengths` gives each present block's token count in sequence order P, D, S, A (a block of length 0 or
    absent is left out). `prefix_valid` (B, len P) marks real prefix tokens; padded text tokens are hidden
    from every query.
    """
    rules = RULES[kind]
    present = [b for b in BLOCKS if lengths.get(b, 0) > 0]
    spans, start = {}, 0
    for b in present:
        spans[b] = (start, start + lengths[b])
        start += lengths[b]
    mask = torch.zeros(start, start, dtype=torch.bool)
    for query in present:
        q0, q1 = spans[query]
        for key in rules[query]:
            if key in spans:
                k0, k1 = spans[key]
                mask[q0:q1, k0:k1] = True
    mask = mask.unsqueeze(0)
    if prefix_valid is not None:
        keys = torch.ones(prefix_valid.shape[0], start, dtype=torch.bool)
        p0, p1 = spans["P"]
        keys[:, p0:p1] = prefix_valid
        mask = mask & keys[:, None, :]
    return mask


def positions(lengths: dict[str, int], prefix_valid: torch.Tensor) -> torch.Tensor:
    """RoPE positions (B, L): consecutive over real tokens, so padding does not shift later blocks."""
    batch = prefix_valid.shape[0]
    rest = sum(n for b, n in lengths.items() if b != "P")
    valid = torch.cat([prefix_valid, torch.ones(batch, rest, dtype=torch.bool)], dim=1)
    return (torch.cumsum(valid.long(), dim=1) - 1).clamp(min=0)


def per_expert_positions(lengths: dict[str, int], batch: int) -> torch.Tensor:
    """RoPE positions (B, L) counted from 1 within each expert's tokens (the prefix's padding included), as
    open-pi-zero numbers them: the VLM's tokens 1..len(P), the depth expert's 1..len(D), and the action
    expert's proprio then action tokens 1..len(S)+len(A)."""
    experts = [["P"], ["D"], ["S", "A"]]
    parts = [torch.arange(1, sum(lengths.get(b, 0) for b in blocks) + 1) for blocks in experts]
    return torch.cat(parts).unsqueeze(0).expand(batch, -1)
