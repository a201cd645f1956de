"""One OpenAI request budget for every task in every worker: requests and tokens, refilling.

OpenAI meters an organisation, not a process, so the budget lives in Redis where all workers
charge it; without Redis it lives in this process's memory (shared by all its threads and by
every ``RateBudget`` with the same namespace and limits). A request is charged *before* it is
sent, with its token count, so what is sent can never pass the limits - no 429 is needed to
find out.

The model is the provider's own: a bucket per limit that starts full (capacity = the limit) and
refills continuously at ``limit / window`` per second - what ``x-ratelimit-reset-tokens`` ("full
again in ...") describes. Sending T tokens (T > TPM) can take no less than (T - TPM) / TPM
minutes, and a bucket that refills all along gets there; a window that frees a minute's tokens
only once they have left it would not.

Each bucket is kept as GCRA's one number, its *theoretical arrival time* (TAT): the moment the
bucket would be full again. A request costing ``n`` fits when ``max(TAT, now) + n * interval -
now`` stays within the window (``interval`` = window / limit, the refill time of one unit); it
is charged by moving TAT to that sum. Both limits are tested and charged in ONE step - a Lua
script in Redis (its clock: ``TIME``, so hosts' clocks do not matter), a lock in memory - so
no request slot is wasted on a lost race and concurrent workers can never overspend. Where the
buckets live is a ``Store``: ``MemoryStore`` (``ratelimit_store``) or ``RedisStore``
(``ratelimit_redis``).

What the model leaves to this module:

* **Arrival jitter.** The server charges a request when it *arrives*, a variable moment after
  it was charged here. If arrivals are delayed by between d and d + J, a charge sequence that
  fits buckets of ``window - J`` seconds arrives as one that fits buckets of ``window`` seconds
  (GCRA's cell-delay-variation bound). So each charge must leave ``margin_seconds`` of refill
  in the bucket. This costs the margin's worth of tokens once per burst (a run that keeps the
  budget busy finishes ``margin`` seconds later), never a share of the sustained rate.
  The default of 1 s is far above the spread between a charge and its request's arrival,
  leaving room for the stalls of a loaded machine, at a cost of 1 s per run.
  A request bigger than the bucket less its margin (only with a tiny TPM) waits instead for a
  full bucket that has stayed full for the margin.
* **Calibration.** ``calibrate`` takes the ``x-ratelimit-remaining-*`` of an answer: if the
  server has fewer left than this budget believes (traffic Tidal does not know about, or a
  tokenizer that counts differently), the budget is drained to match. It never adds: the
  budget's own accounting stays the ceiling.

Workers share a budget only when they agree on namespace, limits, window and margin: all are
part of the Redis key.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence

from tidal.embedders.ratelimit_redis import RedisStore
from tidal.embedders.ratelimit_store import KINDS, MemoryStore, Store
from tidal.errors import ConfigError, TransientError
from tidal.retrying import OUTAGE_SECONDS

log = logging.getLogger("tidal.embedders.ratelimit")


class RateBudget:
    """Requests and tokens per window as refilling buckets, charged before each request."""

    def __init__(
        self,
        redis_url: str | None,
        rpm: int | None,
        tpm: int | None,
        *,
        namespace: str = "tidal:openai",
        window_seconds: float = 60,
        margin_seconds: float = 1.0,
        max_wait: float | None = None,
        recover_windows: float = 20.0,
        outage_seconds: float = OUTAGE_SECONDS,
    ) -> None:
        """``rpm``/``tpm`` are per ``window_seconds`` (60 unless a test shortens it); None is
        no limit. Each charge leaves ``margin_seconds`` of refill unspent (see the module
        docstring). With ``max_wait``, ``acquire`` charges nothing and raises TransientError
        when the request could not go within that many seconds; without it (a run's budget),
        a request always gets its turn. A rate lowered by 429s doubles back every
        ``recover_windows`` windows without one."""
        for setting, value in (("TIDAL_OPENAI_RPM", rpm), ("TIDAL_OPENAI_TPM", tpm)):
            if value is not None and value < 1:
                raise ConfigError(f"{setting} must be at least 1, got {value}")
        if window_seconds <= 0 or not 0 <= margin_seconds < window_seconds:
            raise ValueError(
                f"need window > 0 and 0 <= margin < window: {window_seconds}, {margin_seconds}"
            )
        self.rpm, self.tpm = rpm, tpm
        self.window_seconds = window_seconds
        self.margin_seconds = margin_seconds
        self.max_wait = max_wait
        self.recover_seconds = recover_windows * window_seconds
        self.namespace = namespace
        self.key = f"tidal:{namespace}:bucket:{rpm}:{tpm}:{window_seconds}:{margin_seconds}"
        self.limits = (rpm, tpm)
        self.intervals = tuple(window_seconds / n if n else 0.0 for n in self.limits)
        """Seconds that refill one unit of each limit at its configured rate; 0: no limit."""
        self._store: Store = (
            MemoryStore() if redis_url is None else RedisStore(redis_url, outage_seconds)
        )
        self.sleep: Callable[[float], object] = time.sleep
        """How ``acquire`` waits for its turn (a test records the waits instead)."""

    def acquire(self, tokens: int) -> float:
        """Take this request's turn, charge it, and sleep until it may go; seconds slept.

        Turns are served in the order they were taken (the charge is made at once, for the
        moment the request may go), so a large request is never starved by small ones that
        keep taking the refill. A little jitter keeps waiting workers from waking together.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if self.tpm is not None and tokens > self.tpm:
            raise ConfigError(
                f"one request of {tokens} tokens can never fit a budget of {self.tpm} tokens "
                f"per {self.window_seconds} s; raise TIDAL_OPENAI_TPM (if the account allows) "
                "or lower TIDAL_EMBED_BATCH_SIZE"
            )
        if not any(self.intervals):
            return 0.0
        wait, charged = self._store.acquire(self, (1, tokens))
        if not charged:
            raise TransientError(
                f"no room in the OpenAI budget of {self.rpm} requests and {self.tpm} tokens per "
                f"{self.window_seconds} s within {self.max_wait:g} s (it would take {wait:.1f} s)"
            )
        if wait <= 0:
            return 0.0
        if wait > 10:
            log.info("waiting %.0f s for this request's turn in the OpenAI budget", wait)
        wait += random.uniform(0, 0.02)
        self.sleep(wait)
        return wait

    def calibrate(
        self,
        remaining_requests: int | None,
        remaining_tokens: int | None,
        age: float,
        *,
        answered_tokens: int | None = None,
        limit_requests: int | None = None,
        limit_tokens: int | None = None,
    ) -> None:
        """Take in what an answer's rate-limit headers say.

        * ``remaining_*``: if the server has fewer left than this budget believes, the bucket
          is drained to match (never filled). ``age``: seconds since the request was charged;
          the server counted at its arrival, somewhere in that span, and assuming the earliest
          moment credits the most refill, so the drain never exceeds the server's own words.
        * ``answered_tokens``: the request succeeded with these tokens; answers over the last
          window are what a 429 learns the real limit from (``slow_down``).
        * ``limit_*``: the server's own limits; lower than configured, they are the ceiling.
        """
        self._store.calibrate(
            self,
            (remaining_requests, remaining_tokens),
            (limit_requests, limit_tokens),
            max(0.0, age),
            answered_tokens,
        )

    def slow_down(
        self, kinds: Sequence[str] = KINDS, *, after: float | None = None
    ) -> tuple[float, float]:
        """A 429 although this budget let the request go: the real limit is lower than the
        configured one (another client on the account, a smaller tier, a proxy's quota).

        Each limit in ``kinds`` has its bucket empty ``after`` seconds from now (when the 429
        said to come back: the requests waiting for that moment then go out paced, not in a
        burst), and drops to ``LEARNED_SHARE`` of what
        the server answered over the last window when that is lower than now (halved when
        nothing was answered), for every process sharing the budget, at most once per window:
        after a cut, the server's own window is still full of the traffic before it, and its
        429s then say "wait", which the caller does, not "slower". The rate then doubles back
        every ``recover_windows`` windows without another cut, so a storm ends and a limit that
        was raised is found again. Returns the new shares of the configured rates (requests,
        tokens).
        """
        cut = tuple(int(kind in kinds) for kind in KINDS)
        scales = self._store.slow_down(self, cut, max(0.0, after or 0.0))
        log.warning(
            "OpenAI answered 429 within this budget: now %s of TIDAL_OPENAI_RPM and %s of "
            "TIDAL_OPENAI_TPM, recovering gradually",
            f"{scales[0]:.1%}",
            f"{scales[1]:.1%}",
        )
        return scales

    def scales(self) -> tuple[float, float]:
        """The current shares of the configured rates (1.0: no 429 has lowered them)."""
        return self._store.scales(self)

    def clear(self) -> None:
        """Forget every charge and everything learned (tests, or after changing the limits)."""
        self._store.clear(self.key)
