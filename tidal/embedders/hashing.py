"""A deterministic stand-in embedder: vectors from a hash of the text, no model, no network.

For tests of the run's logic and for measuring Tidal's own overhead; its vectors carry no
meaning, so searching an index built with it finds nothing useful. A provider of
``BaseEmbedder`` like any other, with no caps and nothing to connect to or check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from tidal.chunking import count_tokens
from tidal.embedders.base import BaseEmbedder
from tidal.embedders.catalog import OPENAI_MAX_INPUT_TOKENS


class HashEmbedder(BaseEmbedder):
    """Unit vectors seeded by each text's sha256; counts tokens in cl100k_base."""

    def __init__(
        self, dimension: int = 8, *, max_input_tokens: int = OPENAI_MAX_INPUT_TOKENS
    ) -> None:
        self.name = f"hash:{dimension}"
        self.dimension = dimension
        self.max_input_tokens = max_input_tokens
        self.calls: list[list[str]] = []
        """Every batch sent, in order: what a test asserts about requests."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [count_tokens(text) for text in texts]

    def send(self, batch: list[str], tokens: int) -> list[list[float]]:
        self.calls.append(list(batch))
        vectors = []
        for text in batch:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.dimension)
            vectors.append((vector / np.linalg.norm(vector)).tolist())
        return vectors
