"""Quick retries inside one attempt, for calls that are safe to repeat.

Two layers of retry, so neither multiplies the other: here, a few short tries (a fraction of a
second to a few seconds, with jitter, inside a total time cap) cure the 503 or the dropped
connection that a busy service answers one request in ten; the task's own retries (2, 4, 8 s)
stay for what a quick retry cannot cure. A download that fails three times in one second then
fails its attempt, and the file's next attempt starts fresh.

Only idempotent calls go through here - a download, a listing page, a bucket lookup, an
embedding request - and only TransientError is retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tidal.errors import TransientError

log = logging.getLogger("tidal.retrying")

T = TypeVar("T")


@dataclass(frozen=True)
class QuickRetry:
    """Up to ``attempts`` tries, waits doubling from ``first_delay`` (at most ``max_delay``,
    with full jitter), never past ``total`` seconds in all."""

    attempts: int = 5
    first_delay: float = 0.1
    max_delay: float = 2.0
    total: float = 10.0

    def call(self, fn: Callable[[], T], *, what: str) -> T:
        """``fn()``, tried again on TransientError while the limits allow; else its error."""
        deadline = time.monotonic() + self.total
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientError as exc:
                wait = self.delay(attempt, exc)
                if attempt == self.attempts or time.monotonic() + wait > deadline:
                    raise
                log.debug("%s: %s; quick retry %d in %.2f s", what, exc.message, attempt, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def delay(self, attempt: int, exc: TransientError) -> float:
        """The server's ``retry_after`` when it named one, else jittered exponential backoff."""
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, int | float) and asked >= 0:
            return float(asked)
        return random.uniform(0, min(self.max_delay, self.first_delay * 2 ** (attempt - 1)))


IDEMPOTENT_READS = QuickRetry()
"""The policy for downloads, listing pages and lookups."""


def retry_after(value: str | None) -> float | None:
    """Seconds an HTTP ``Retry-After`` asks for (seconds, or an HTTP date), else None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
