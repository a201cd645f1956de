"""What every batching embedder does the same way: split → batch → send → fold.

A provider subclasses ``BaseEmbedder`` and writes only what is its own: its name and width, its
caps (``max_input_tokens``, ``max_batch_inputs``, ``max_batch_tokens``) and one ``send`` of a
batch. ``embed`` then cuts a text over the input limit into pieces (``split``), batches the
pieces within the caps, sends each batch - through the provider's ``service`` when it has one,
so an outage or a 429 is waited out and a batch's own failure retried as ``tidal.retrying``
does it, without sending the file's other batches again - and folds each text's pieces back
into one vector. The steps themselves are pure functions in ``tidal.embedders.batching``.

Splitting and counting are in cl100k_base unless the provider overrides ``count_tokens`` and
``split`` for a tokenizer of its own.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

from tidal.chunking import encoding
from tidal.embedders.batching import batch_by_tokens, fit_input, fold
from tidal.errors import ConfigError, PermanentError
from tidal.retrying import Policy, Service

log = logging.getLogger("tidal.embedders")

QUICK = Policy(attempts=5, first_delay=0.2, max_delay=4.0, total=20.0)
"""Quick retries of one batch's own 5xx, timeouts and dropped connections."""


class BaseEmbedder(ABC):
    """An ``Embedder`` whose ``embed`` is split → batch → send → fold over one ``send``."""

    name: str
    """Provider and model; part of the pipeline fingerprint."""
    dimension: int
    max_input_tokens: int
    """The most tokens one input may have; a longer text is split and its vectors folded."""
    max_batch_inputs: int | None = None
    """The most inputs one ``send`` may carry; None: no cap."""
    max_batch_tokens: int | None = None
    """The most tokens one ``send`` may carry, summed over its inputs; None: no cap."""
    token_cap_variable: str | None = None
    """The setting that raises ``max_batch_tokens``, named when one input is over it."""
    refuses_empty: bool = False
    """Whether the provider refuses an empty input: then it fails before any request."""
    service: Service | None = None
    """The remote service every ``send`` goes through (waits and retries), or None for a
    provider that sends nowhere."""
    policy: Policy = QUICK
    """How one batch's own failures are retried through ``service``."""
    split_inputs: int = 0
    """Texts over ``max_input_tokens`` that were split and folded (see ``fit_input``)."""

    @abstractmethod
    def send(self, batch: list[str], tokens: int) -> list[list[float]]:
        """One try of one batch (``tokens``: its cl100k total): a vector per input, in order.

        Raises ``tidal.errors`` types: RateLimited (later), Unavailable (no answer),
        TransientError (this request failed), ConfigError or PermanentError (never again)."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # Not encode_ordinary_batch: it starts a pool of 8 threads per call, on top of Tidal's
        # own concurrency.
        enc = encoding()
        return [len(enc.encode_ordinary(text)) for text in texts]

    def split(self, text: str) -> list[str]:
        """Consecutive pieces of ``text`` that each fit ``max_input_tokens``."""
        return fit_input(text, self.max_input_tokens)

    def connect(self) -> None:  # noqa: B027 - nothing to open unless the provider says so
        """Open what a request needs (a client) now rather than at the first request."""

    def check(self) -> None:  # noqa: B027 - nothing to ask unless the provider says so
        """Fail fast on a setting that cannot work; nothing to ask by default."""

    def warm_up(self, *, check: bool) -> None:
        """Get ready to embed in this process: ``connect``, and ``check`` when asked."""
        self.connect()
        if check:
            self.check()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order, each ``dimension`` wide."""
        vectors = self._embed(texts)
        for vector in vectors:
            if len(vector) != self.dimension:
                raise ConfigError(
                    f"{self.name} answered {len(vector)}-dimension vectors, not {self.dimension}; "
                    "set TIDAL_EMBEDDING_DIMENSIONS to what the model makes"
                )
        return vectors

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        """``embed`` without the width check (what a provider learns its width from)."""
        texts = list(texts)
        if not texts:
            return []
        if self.refuses_empty and not all(texts):
            raise PermanentError("cannot embed an empty text (the API refuses empty inputs)")
        pieces: list[str] = []
        owners: list[int] = []
        counts: list[int] = []
        for i, (text, n) in enumerate(zip(texts, self.count_tokens(texts), strict=True)):
            parts = [text] if n <= self.max_input_tokens else self.split(text)
            if len(parts) > 1:
                self.split_inputs += 1
                log.warning(
                    "a %d-token text is over %s's %d-token limit: embedding it as %d pieces",
                    n,
                    self.name,
                    self.max_input_tokens,
                    len(parts),
                )
                pieces.extend(parts)
                counts.extend(self.count_tokens(parts))
            else:
                pieces.append(text)
                counts.append(n)
            owners.extend([i] * len(parts))
        try:
            batches = batch_by_tokens(
                counts, max_inputs=self.max_batch_inputs, max_tokens=self.max_batch_tokens
            )
        except ValueError as exc:
            hint = f"; raise {self.token_cap_variable}" if self.token_cap_variable else ""
            raise ConfigError(f"{exc}: one input is over the per-request cap{hint}") from None
        vectors: list[list[float]] = []
        for batch in batches:
            vectors.extend(self._request([pieces[j] for j in batch], sum(counts[j] for j in batch)))
        return fold(vectors, owners, counts, len(texts))

    def _request(self, batch: list[str], tokens: int) -> list[list[float]]:
        """One batch through the provider's ``service``: 429s and outages are waited out, and a
        failure of this batch alone is retried quickly, this request only."""
        if self.service is None:
            return self.send(batch, tokens)
        return self.service.call(
            lambda: self.send(batch, tokens), what="embedding request", policy=self.policy
        )
