"""Instruction tokenizers: the backbone folder's own (real PaliGemma/Gemma weights), or the project's
offline word tokenizer for the small configurations, which needs no download and no training corpus.

Both return fixed-length id and mask arrays of `max_tokens` (the paper's 20 text tokens), right-padded.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

PAD, BOS, NEWLINE = 0, 1, 2
N_SPECIAL = 3


class HashWordTokenizer:
    """Lower-cased words mapped to ids by a stable hash into `n_buckets` buckets.

    Any instruction tokenizes the same way on every machine, with no vocabulary file to ship or fetch; with
    4096 buckets and the few hundred distinct words of robot instructions, collisions are rare (and only
    merge two words' embeddings). Sequences are [BOS] words... [NEWLINE], as PaliGemma prompts end in "\\n".
    """

    def __init__(self, n_buckets: int = 4096, max_tokens: int = 20) -> None:
        self.n_buckets = n_buckets
        self.max_tokens = max_tokens

    @property
    def vocab_size(self) -> int:
        return self.n_buckets + N_SPECIAL

    def word_id(self, word: str) -> int:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        return N_SPECIAL + int.from_bytes(digest, "little") % self.n_buckets

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(texts), self.max_tokens), PAD, dtype=np.int64)
        mask = np.zeros((len(texts), self.max_tokens), dtype=bool)
        for row, text in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", text.lower().replace("_", " "))
            tokens = [BOS, *(self.word_id(w) for w in words)][: self.max_tokens - 1] + [NEWLINE]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = True
        return ids, mask


class FolderTokenizer:
    """The tokenizer saved in a PaliGemma model folder, used the way PaliGemma prompts are built."""

    def __init__(self, folder: Path, max_tokens: int = 20) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.max_tokens = max_tokens

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        prompts = [t.strip().replace("_", " ") + "\n" for t in texts]
        out = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="np"
        )
        return out["input_ids"].astype(np.int64), out["attention_mask"].astype(bool)
