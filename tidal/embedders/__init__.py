"""Text → vectors. A new provider is one new module implementing ``Embedder``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tidal.errors import ConfigError


@runtime_checkable
class Embedder(Protocol):
    """An embedding model with a fixed output dimension and a hard input limit."""

    name: str
    """Provider and model, e.g. ``local:all-MiniLM-L6-v2``; part of the pipeline fingerprint."""
    dimension: int
    max_input_tokens: int
    """The most tokens (in the model's own tokenizer) one input may have without truncation."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in the model's own tokenizer."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order. Raises TransientError when a retry may help."""
        ...


def open_embedder(name: str, model: str) -> Embedder:
    """The Embedder for ``TIDAL_EMBEDDER`` / ``TIDAL_EMBEDDING_MODEL``."""
    if name == "local":
        from tidal.embedders.local import LocalEmbedder

        return LocalEmbedder(model)
    raise ConfigError(f"TIDAL_EMBEDDER={name!r} is not a known embedder; use 'local'")


__all__ = ["Embedder", "open_embedder"]
