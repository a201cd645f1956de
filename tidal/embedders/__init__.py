"""Text → vectors. A new provider is one new module implementing ``Embedder``.

Most providers subclass ``tidal.embedders.base.BaseEmbedder``, which owns split → batch → send
→ fold and leaves them one ``send`` of a batch and their caps; model facts (widths, input
limits, prices, each embedder's defaults) are in ``tidal.embedders.catalog``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tidal.settings import Settings

log = logging.getLogger("tidal.embedders")


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

    def embed(self, texts: Sequence[str]) -> Sequence[Sequence[float]]:
        """One vector per text, in order (float lists, or the rows of a 2-D float32 array).
        Raises TransientError when a retry may help."""
        ...

    def check(self) -> None:
        """Fail fast (ConfigError naming the variable) on a key, quota or model that cannot
        work. Called once per run, and only by a run with something to embed."""
        ...

    def warm_up(self, *, check: bool) -> None:
        """Get ready to embed in this process, so the first file does not wait for it: load
        the model, or open the client; with ``check``, also ``check()``. Blocks, and may raise
        what ``embed`` or ``check`` would."""
        ...


def open_embedder(settings: Settings) -> Embedder:
    """The Embedder that ``TIDAL_EMBEDDER`` and ``TIDAL_EMBEDDING_MODEL`` name."""
    if settings.embedder == "openai":
        from tidal.embedders.openai import OpenAIEmbedder
        from tidal.embedders.ratelimit import RateBudget

        assert settings.openai_api_key is not None  # checked by Settings
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        return OpenAIEmbedder(
            settings.effective_model,
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            dimensions=settings.embedding_dimensions,
            budget=RateBudget(
                redis_url,
                settings.openai_rpm,
                settings.openai_tpm,
                window_seconds=settings.openai_window_seconds,
                outage_seconds=settings.outage_seconds,
            ),
            outage_seconds=settings.outage_seconds,
        )
    from tidal.embedders.local import LocalEmbedder

    return LocalEmbedder(settings.effective_model)


def open_query_embedder(settings: Settings) -> Embedder:
    """The Embedder a search embeds its query with: the same vectors as ``open_embedder``'s,
    ready sooner.

    For the local model that is ``QueryEmbedder``, its forward pass in numpy, which answers a
    query before sentence-transformers would have imported torch; a model it does not implement
    gets the full ``LocalEmbedder`` instead (seconds to load, but its own vectors). OpenAI's
    client is light already: the normal embedder.
    """
    if settings.embedder != "local":
        return open_embedder(settings)
    from tidal.embedders.local_query import QueryEmbedder, UnsupportedModel

    try:
        return QueryEmbedder(settings.effective_model)
    except UnsupportedModel as exc:
        log.info("embedding the query with sentence-transformers: %s", exc)
        return open_embedder(settings)


__all__ = ["Embedder", "open_embedder", "open_query_embedder"]
