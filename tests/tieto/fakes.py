"""A small deterministic embedder so the index, filter and ingest tests need no model.

Words are hashed into signed buckets (a bag-of-words vector): texts that share
words are close, texts that share none are near-orthogonal, which is all the
ranking tests need. Word-pieces are counted like BERT's pre-tokenizer (words and
punctuation marks), so counts add up across whitespace as the real ones do.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

_PIECE = re.compile(r"\w+|[^\w\s]")


class FakeEmbedder:
    def __init__(self, dim: int = 32, max_tokens: int = 254, model_id: str = "fake:1") -> None:
        self.dim = dim
        self.max_tokens = max_tokens
        self.model_id = model_id
        self.embedded = 0
        """Texts embedded so far (what the incremental-ingest tests count)."""

    def count_tokens(self, text: str) -> int:
        return len(_PIECE.findall(text))

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float64)
        for word in re.findall(r"\w+", text.lower()):
            h = zlib.crc32(word.encode())
            v[h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        if not v.any():
            v[0] = 1.0
        return (v / np.linalg.norm(v)).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded += len(texts)
        for text in texts:
            assert self.count_tokens(text) <= self.max_tokens, "chunk too long for the model"
        return np.stack([self.vector(t) for t in texts]) if texts else \
            np.zeros((0, self.dim), dtype=np.float32)
