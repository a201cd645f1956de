"""What Tidal knows about embedding models and embedders before asking them: one place.

A ``Model`` is a model the code can describe without a request: its width, the longest input it
reads whole, and its price. A model not listed here still works: an OpenAI-compatible server's
is asked for its width once (``OpenAIEmbedder``), and a local model's width and input limit are
read from its own files (``LocalEmbedder``), which is why the local default has no entry.

``EmbedderDefaults`` are what each embedder uses when a setting is left unset; ``Settings``
reads them, so a default changes here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

EmbedderName = Literal["local", "openai"]

OPENAI_MAX_INPUT_TOKENS = 8191
"""The most cl100k tokens OpenAI's embedding models take in one input; also assumed of a model
an OpenAI-compatible server serves, which says nothing about its own limit."""


@dataclass(frozen=True)
class Model:
    """An embedding model's fixed facts."""

    name: str
    dimension: int
    """Its vectors' width when no smaller width is asked for."""
    max_input_tokens: int
    """The most tokens one input may have, in the model's own tokenizer."""
    price_per_million_tokens: float | None = None
    """USD per million input tokens (the provider's published price), for the dry run's
    estimate; None when embedding costs nothing per token."""


@dataclass(frozen=True)
class EmbedderDefaults:
    """What an embedder uses for the settings left unset."""

    model: str
    chunk_tokens: int
    """Tokens per chunk (cl100k), small enough that a chunk fits the model's input limit."""
    chunk_overlap: int
    concurrency: int
    """Files in flight."""


MODELS: Mapping[str, Model] = {
    entry.name: entry
    for entry in (
        Model("text-embedding-3-small", 1536, OPENAI_MAX_INPUT_TOKENS, 0.02),
        Model("text-embedding-3-large", 3072, OPENAI_MAX_INPUT_TOKENS, 0.13),
        Model("text-embedding-ada-002", 1536, OPENAI_MAX_INPUT_TOKENS, 0.10),
    )
}

DEFAULTS: Mapping[EmbedderName, EmbedderDefaults] = {
    # all-MiniLM-L6-v2 truncates at 256 word pieces, and design JSON turns into key paths that
    # cost up to about 1.6 word pieces per cl100k token: 160 tokens stays under the limit with
    # room. The model encodes on one thread (torch already spreads one call over every core)
    # and merges the texts of the files waiting into each call, so more files in flight make
    # fuller calls.
    "local": EmbedderDefaults(
        model="all-MiniLM-L6-v2", chunk_tokens=160, chunk_overlap=24, concurrency=16
    ),
    # OpenAI's requests mostly wait on the network, paced by the shared budget rather than by
    # the files in flight; many more gain little, as the run's own CPU then sets the pace.
    # Files in flight hold no database connection while they wait (claims are rows), so this
    # is not bounded by TIDAL_DATABASE_CONNECTIONS.
    "openai": EmbedderDefaults(
        model="text-embedding-3-small", chunk_tokens=512, chunk_overlap=64, concurrency=32
    ),
}

PRICE_PER_MILLION_TOKENS: Mapping[str, float] = {
    name: entry.price_per_million_tokens
    for name, entry in MODELS.items()
    if entry.price_per_million_tokens is not None
}
"""USD per million input tokens by model name, for the models with a price."""


def model(name: str) -> Model | None:
    """The catalog's entry for ``name``, or None for a model it does not know."""
    return MODELS.get(name)


def defaults(embedder: str) -> EmbedderDefaults:
    """The defaults of the embedder ``TIDAL_EMBEDDER`` names."""
    return DEFAULTS[embedder]  # type: ignore[index]


__all__ = [
    "DEFAULTS",
    "MODELS",
    "OPENAI_MAX_INPUT_TOKENS",
    "PRICE_PER_MILLION_TOKENS",
    "EmbedderDefaults",
    "EmbedderName",
    "Model",
    "defaults",
    "model",
]
