"""OpenAI's embeddings API (or any server that speaks it), through the official ``openai`` client.

The provider half of ``BaseEmbedder``: the client, one ``send`` of a batch, and the mapping of
the SDK's errors to Tidal's. Every request goes through the API's ``Service``
(``tidal.retrying``), with the SDK's own retries off (``max_retries=0``: hidden HTTP attempts
would be charged to no budget):

* A 429 is "later": waited out as the server asks (``retry-after-ms``, ``retry-after``, else
  the ``x-ratelimit-reset-*`` of the exhausted limit), never as an attempt, and it tells the
  shared budget to slow down (``RateBudget.slow_down``), so a limit lower than the configured
  one is learned instead of hammered. Each try is charged to the budget again, as OpenAI
  counts it again.
* An API that stops answering (refused connections, 502/503/504 to every request, the probe's
  included) is waited out by every batch in flight, without spending attempts, up to
  ``TIDAL_OUTAGE_SECONDS``.
* Any other transient failure of one batch (a 500, a timeout) is retried quickly by this batch
  alone (``QUICK``), so one bad answer never throws away the file's good batches; what persists
  raises TransientError, and Tidal's task retries, with their backoff, decide when to try again.

Requests are charged to a shared ``RateBudget`` before they are sent, so with a budget at or
under the account's limits a 429 should only come from traffic Tidal does not know about; every
answer's ``x-ratelimit-remaining-*`` (a 429's too) is passed back to the budget
(``openai_limits.report``), which drains itself when the server has less left than it thought.

Vectors are asked for as base64 (what the SDK sends by default, a quarter the bytes of JSON
floats) and decoded here as little-endian float32: passing ``encoding_format`` explicitly
stops the SDK from decoding them itself, so the result does not depend on its version. A
compatible server that ignores the format and sends floats is accepted too.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tidal.embedders import catalog
from tidal.embedders.base import QUICK, BaseEmbedder
from tidal.embedders.openai_limits import limited_kinds, report, retry_delay
from tidal.errors import (
    ConfigError,
    PermanentError,
    RateLimited,
    ServiceDown,
    TidalError,
    TransientError,
    Unavailable,
)
from tidal.retrying import OUTAGE_SECONDS, Service

if TYPE_CHECKING:
    import openai

    from tidal.embedders.ratelimit import RateBudget

MAX_INPUTS_PER_REQUEST = 2048
"""OpenAI refuses a request of more inputs than this."""
MAX_TOKENS_PER_REQUEST = 300_000
"""OpenAI refuses a request whose inputs hold more tokens than this, summed."""
CHECK_TEXT = "dimension probe"
"""What the run's check and the width probe send: two tokens."""
CHECK_FRESH_SECONDS = 60.0
"""How long a passed ``check`` stands: ``python flows/ingest.py`` checks while Prefect sets up
the flow run, and the flow's own check a moment later finds it done instead of waiting a
second round trip before the first file."""


class Unreachable(Unavailable):
    """No connection to the API at all (refused, reset, DNS), as opposed to a slow answer."""


class OpenAIEmbedder(BaseEmbedder):
    """An OpenAI embedding model, batched to the API's caps and paced by a shared budget."""

    token_cap_variable = "TIDAL_OPENAI_TPM"
    refuses_empty = True
    policy = QUICK

    def __init__(
        self,
        model: str = catalog.DEFAULTS["openai"].model,
        *,
        api_key: str,
        base_url: str | None = None,
        dimensions: int | None = None,
        budget: RateBudget | None = None,
        timeout: float = 60.0,
        max_retries: int = 0,
        max_batch_inputs: int = MAX_INPUTS_PER_REQUEST,
        max_batch_tokens: int = MAX_TOKENS_PER_REQUEST,
        outage_seconds: float = OUTAGE_SECONDS,
    ) -> None:
        """A model the catalog does not know (a compatible server's) is probed once, here, for
        its dimension - so a wrong key or URL fails at start-up, not in the first file."""
        if not api_key:
            raise ConfigError("OPENAI_API_KEY is not set; the openai embedder needs an API key")
        if dimensions is not None and dimensions < 1:
            raise ConfigError(f"TIDAL_EMBEDDING_DIMENSIONS must be at least 1, got {dimensions}")
        known = catalog.model(model)
        self.model = model
        self.name = f"openai:{model}" + (f"@{dimensions}" if dimensions else "")
        self.max_input_tokens = known.max_input_tokens if known else catalog.OPENAI_MAX_INPUT_TOKENS
        self._dimensions = dimensions
        self._budget = budget
        self.max_batch_inputs = max_batch_inputs
        # A batch the budget could never admit is split instead: only one input over the whole
        # TPM is then an error.
        self.max_batch_tokens = (
            min(max_batch_tokens, budget.tpm or max_batch_tokens) if budget else max_batch_tokens
        )
        self._api_key = api_key
        self._check_lock = threading.Lock()
        self._checked_at: float | None = None
        self._check_failed: tuple[float, ConfigError] | None = None
        self.failed_check_seconds = 10.0
        """How long a check that failed on the key, quota or model is answered from memory."""
        self._client_options: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._client_lock = threading.Lock()
        self._opened: openai.OpenAI | None = None
        self.service = Service(
            "the embeddings API", "OPENAI_BASE_URL", self._probe, outage_seconds=outage_seconds
        )
        width = dimensions or (known.dimension if known else None)
        self.dimension: int = width if width else len(self._embed([CHECK_TEXT])[0])

    def connect(self) -> None:
        """Import the SDK and make the client now rather than at the first request."""
        self._client  # noqa: B018 - the property makes it

    @property
    def _client(self) -> openai.OpenAI:
        """The SDK's client, made at the first request: a run with nothing to embed (most daily
        runs) never pays for importing ``openai``."""
        with self._client_lock:
            if self._opened is None:
                import openai

                self._opened = openai.OpenAI(**self._client_options)
            return self._opened

    def check(self) -> None:
        """One two-token request: a revoked key, an exhausted quota, an unknown model or a
        wrong width then stops the run after one request instead of one per worker. An API
        that cannot be reached at all, after the quick retries, stops it too: every file would
        only meet the same refused connection, four attempts each. (A 5xx or a timeout here is
        left to the files: a busy service may recover.) A check passed within
        ``CHECK_FRESH_SECONDS`` is not asked again, and one that failed on the key, quota or
        model within ``failed_check_seconds`` raises again without a request (the warm-up's
        check and the flow's cost one request between them); a second caller waits for one in
        flight."""
        with self._check_lock:
            now = time.monotonic()
            checked = self._checked_at
            if checked is not None and now - checked < CHECK_FRESH_SECONDS:
                return
            failed = self._check_failed
            if failed is not None and now - failed[0] < self.failed_check_seconds:
                raise failed[1]
            try:
                self.embed([CHECK_TEXT])
            except Unreachable as exc:
                raise ServiceDown(f"{exc.message}; check OPENAI_BASE_URL and the network") from None
            except ConfigError as exc:
                self._check_failed = (time.monotonic(), exc)
                raise
            self._checked_at = time.monotonic()
            self._check_failed = None

    def send(self, batch: list[str], tokens: int) -> list[list[float]]:
        """One try, charged to the budget before it is sent, as OpenAI counts each try."""
        import openai  # loaded by the client already: a name lookup

        extra: dict[str, Any] = {"dimensions": self._dimensions} if self._dimensions else {}
        if self._budget is not None:
            self._budget.acquire(tokens)
        sent = time.monotonic()
        try:
            raw = self._client.embeddings.with_raw_response.create(
                model=self.model, input=batch, encoding_format="base64", **extra
            )
            if self._budget is not None:
                report(self._budget, raw.headers, sent, answered_tokens=tokens)
            response = raw.parse()
        except openai.RateLimitError as exc:
            headers = exc.response.headers
            if self._budget is not None:
                report(self._budget, headers, sent, answered_tokens=None)
            if exc.code == "insufficient_quota":
                raise self._translate(exc) from None
            wait = retry_delay(headers)
            if self._budget is not None:
                self._budget.slow_down(limited_kinds(headers, _message(exc)), after=wait)
            raise RateLimited(
                f"OpenAI answered 429: {self._redact(_message(exc))}", retry_after=wait
            ) from None
        except openai.OpenAIError as exc:
            raise self._translate(exc) from None
        return _decode(response.data, len(batch))

    def _probe(self) -> None:
        """The outage probe: the smallest request the endpoint serves, two tokens."""
        self.send([CHECK_TEXT], 2)

    def _redact(self, message: str) -> str:
        if len(self._api_key) >= 8:  # a compatible server may echo the key back in full
            message = message.replace(self._api_key, "***")
        return message

    def _translate(self, exc: openai.OpenAIError) -> TidalError:
        """The Tidal error for an SDK error, keeping the server's words but never the key."""
        import openai

        message = self._redact(_message(exc))
        status = getattr(exc, "status_code", None)
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ConfigError(
                f"OpenAI refused OPENAI_API_KEY (HTTP {status}: {message}); check the key, and "
                f"that its project may use {self.model}"
            )
        if isinstance(exc, openai.RateLimitError):
            if exc.code == "insufficient_quota":
                return ConfigError(
                    f"the OpenAI account behind OPENAI_API_KEY is out of quota: {message}"
                )
            return RateLimited(f"OpenAI answered 429: {message}")
        if isinstance(exc, openai.NotFoundError):
            return ConfigError(
                f"{self.model} not found at {self._client.base_url} (HTTP 404: {message}); "
                "check TIDAL_EMBEDDING_MODEL and OPENAI_BASE_URL"
            )
        if isinstance(exc, openai.BadRequestError):
            return PermanentError(f"OpenAI rejected the request (HTTP 400): {message}")
        if isinstance(exc, openai.InternalServerError) and status in (502, 503, 504):
            return Unavailable(f"OpenAI server unavailable (HTTP {status}): {message}")
        if isinstance(exc, openai.InternalServerError):
            return TransientError(f"OpenAI server error (HTTP {status}): {message}")
        if isinstance(exc, openai.APITimeoutError):
            return TransientError(f"no answer from {self._client.base_url}: {message}")
        if isinstance(exc, openai.APIConnectionError):
            return Unreachable(f"could not reach {self._client.base_url}: {message}")
        if isinstance(exc, openai.APIStatusError) and status in (408, 409):
            return TransientError(f"OpenAI answered HTTP {status}: {message}")
        return PermanentError(f"OpenAI error ({type(exc).__name__}): {message}")


def _message(exc: BaseException) -> str:
    """The server's own words for an SDK error."""
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        message = getattr(exc, "message", None) or str(exc)
    return message


def _decode(data: Sequence[Any], expected: int) -> list[list[float]]:
    """Vectors in input order from the API's ``data``, base64 float32 LE or plain floats."""
    if len(data) != expected:
        raise TransientError(f"OpenAI answered {len(data)} embeddings for {expected} inputs")
    vectors = []
    for item in sorted(data, key=lambda d: d.index):
        value = item.embedding
        if isinstance(value, str):
            vectors.append(np.frombuffer(base64.b64decode(value), dtype="<f4").tolist())
        else:
            vectors.append([float(v) for v in value])
    return vectors
