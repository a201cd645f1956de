"""One OpenAI request budget for every task in every worker: requests and tokens per window.

OpenAI meters an organisation, not a process, so the budget lives in Redis where all workers
charge it; without Redis it lives in this process's memory (shared by all its threads and by
every ``RateBudget`` with the same namespace). A request is charged *before* it is sent, with
its token count, so what is sent can never pass the limits - no 429 is needed to find out.

Built on the ``limits`` library's moving window (``MovingWindowRateLimiter``), not on Prefect's
``rate_limit`` (a slot per call, measured at a fifth of its setting under contention) nor on a
hand-written Lua script, because its weighted hit is correct: ``hit(item, key, cost=n)`` is one
Lua script that admits the request only if the window holds at most ``limit - n`` entries and
then records ``n`` entries, atomically, so concurrent workers cannot both squeeze into the last
slots. It is an exact rolling window. ``SlidingWindowCounterRateLimiter`` was rejected: it
*estimates* the previous window's share by assuming its hits were evenly spread, so after a
burst at the end of one window it lets up to nearly twice the limit into one real window.

What the library leaves to this module:

* The server counts a request when it *arrives*, a variable moment after it was charged, and
  a moving window lets a window's worth go out together. Arrival jitter then puts the tail of
  one burst and the head of the next into one server window (measured with the fake server:
  13-16 arrivals in a 2 s window against a budget of 10, from ~50 ms of connection-setup
  jitter). Charges are therefore held ``margin_seconds`` (1) longer than the window: jitter
  under the margin keeps every server window within the limit, at 1/61 of the throughput.
* The moving window stores one entry per unit of cost, so charging raw tokens at 1M TPM would
  keep a million-element list in Redis. Tokens are charged in units of ``ceil(tpm / 10_000)``,
  rounding each request *up* and the limit *down*: the list stays under 10,000 entries and the
  budget can only be undershot, by under one unit per request.
* ``limits`` cannot charge two limits in one step. The token window is checked first (``test``,
  no charge), then the request is charged, then the tokens; if another worker took the tokens
  in between, that request slot is wasted (counted in ``wasted_requests``), never overspent.

Entries are stamped with each worker's clock; NTP keeps hosts within milliseconds, far inside
the margin. Workers share a budget only when they agree on namespace, limits and window: all
are part of the Redis key.
"""

from __future__ import annotations

import math
import random
import threading
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from tidal.errors import ConfigError, ServiceDown, TransientError
from tidal.settings import redact_url

MAX_TOKEN_UNITS = 10_000
"""The most entries the token window keeps, whatever the TPM; sets the charging unit."""

_memory: MemoryStorage | None = None
_memory_lock = threading.Lock()


class RateBudget:
    """Requests-per-window and tokens-per-window, charged before each request."""

    def __init__(
        self,
        redis_url: str | None,
        rpm: int | None,
        tpm: int | None,
        *,
        namespace: str = "tidal:openai",
        window_seconds: int = 60,
        margin_seconds: int = 1,
        max_wait: float = 300.0,
    ) -> None:
        """``rpm``/``tpm`` are per ``window_seconds`` (60 unless a test shortens it); None is
        no limit. Charges are kept ``margin_seconds`` longer than the window (see the module
        docstring). ``acquire`` gives up with TransientError after ``max_wait`` seconds."""
        for setting, value in (("TIDAL_OPENAI_RPM", rpm), ("TIDAL_OPENAI_TPM", tpm)):
            if value is not None and value < 1:
                raise ConfigError(f"{setting} must be at least 1, got {value}")
        if window_seconds < 1 or margin_seconds < 0:  # limits keeps whole seconds only
            raise ValueError(
                f"need whole seconds, window >= 1, margin >= 0: {window_seconds}, {margin_seconds}"
            )
        self.rpm, self.tpm = rpm, tpm
        self.window_seconds = window_seconds
        span = window_seconds + margin_seconds
        self.max_wait = max_wait
        self.namespace = namespace
        self.unit = token_unit(tpm) if tpm else 1
        self.wasted_requests = 0
        storage: Storage = _memory_storage() if redis_url is None else _redis_storage(redis_url)
        if redis_url is not None and not storage.check():
            raise ConfigError(
                f"Redis at TIDAL_REDIS_URL ({redact_url(redis_url)}) does not answer; start it, "
                "or fix the URL (the OpenAI budget every worker shares lives there)"
            )
        self._limiter = MovingWindowRateLimiter(storage)
        self._requests = RateLimitItemPerSecond(rpm, span) if rpm else None
        self._tokens = RateLimitItemPerSecond(tpm // self.unit, span) if tpm else None

    def acquire(self, tokens: int) -> float:
        """Block until one request of ``tokens`` tokens fits; charge it; return seconds slept.

        Waits are computed from when the oldest charge leaves the window, with a little jitter
        so waiting workers do not all retry at the same instant.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if self.tpm is not None and tokens > self.tpm:
            raise ConfigError(
                f"one request of {tokens} tokens can never fit a budget of {self.tpm} tokens "
                f"per {self.window_seconds} s; raise TIDAL_OPENAI_TPM (if the account allows) "
                "or lower TIDAL_EMBED_BATCH_SIZE"
            )
        cost = charge_units(tokens, self.unit, self._tokens.amount) if self._tokens else 0
        slept = 0.0
        while True:
            try:
                wait = self._try(cost)
            except StorageError as exc:  # Redis unreachable or failing: a retry may find it
                raise ServiceDown(
                    f"the OpenAI budget's Redis (TIDAL_REDIS_URL) stopped answering: {exc}"
                ) from exc
            if wait is None:
                return slept
            if slept + wait > self.max_wait:
                raise TransientError(
                    f"waited {slept:.0f} s for room in the OpenAI budget of {self.rpm} requests "
                    f"and {self.tpm} tokens per {self.window_seconds} s; other workers are using "
                    "it all - lower TIDAL_CONCURRENCY or raise the budget if the account allows"
                )
            time.sleep(wait)
            slept += wait

    def _try(self, cost: int) -> float | None:
        """None once charged; else how long to sleep before trying again."""
        ns = self.namespace
        if self._tokens and not self._limiter.test(self._tokens, ns, "tokens", cost=cost):
            return self._wait(self._tokens, "tokens")
        if self._requests and not self._limiter.hit(self._requests, ns, "requests"):
            return self._wait(self._requests, "requests")
        if self._tokens and not self._limiter.hit(self._tokens, ns, "tokens", cost=cost):
            self.wasted_requests += bool(self._requests)  # tokens taken since our test
            return self._wait(self._tokens, "tokens")
        return None

    def _wait(self, item: RateLimitItem, kind: str) -> float:
        reset = self._limiter.get_window_stats(item, self.namespace, kind).reset_time
        span = item.get_expiry()
        return min(max(reset - time.time(), 0.005), span) + random.uniform(0, 0.02)

    def clear(self) -> None:
        """Forget every charge (tests, or after changing the account's limits)."""
        for item, kind in ((self._requests, "requests"), (self._tokens, "tokens")):
            if item:
                self._limiter.clear(item, self.namespace, kind)


def token_unit(tpm: int) -> int:
    """Tokens per stored entry: 1 up to 10,000 TPM, so the window never holds more entries."""
    return max(1, math.ceil(tpm / MAX_TOKEN_UNITS))


def charge_units(tokens: int, unit: int, limit_units: int) -> int:
    """The entries one request of ``tokens`` costs: rounded up, so the budget is never overrun.

    A request whose rounded cost would exceed the whole window, though its tokens fit the TPM,
    is charged the whole window instead: it then needs the window to itself, which is still safe.
    """
    return min(math.ceil(tokens / unit), limit_units)


def _memory_storage() -> MemoryStorage:
    global _memory
    with _memory_lock:
        if _memory is None:
            _memory = MemoryStorage()
        return _memory


def _redis_storage(url: str) -> RedisStorage:
    return RedisStorage(
        url, key_prefix="tidal", wrap_exceptions=True, socket_timeout=10, socket_connect_timeout=10
    )
