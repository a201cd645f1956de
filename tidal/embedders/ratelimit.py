"""One OpenAI request budget for every task in every worker: requests and tokens, refilling.

OpenAI meters an organisation, not a process, so the budget lives in Redis where all workers
charge it; without Redis it lives in this process's memory (shared by all its threads and by
every ``RateBudget`` with the same namespace and limits). A request is charged *before* it is
sent, with its token count, so what is sent can never pass the limits - no 429 is needed to
find out.

The model is the provider's own: a bucket per limit that starts full (capacity = the limit) and
refills continuously at ``limit / window`` per second - what ``x-ratelimit-reset-tokens`` ("full
again in ...") describes. An earlier moving window was safe against such a bucket but up to
twice too slow when the token limit binds: it let a minute's tokens go only once the previous
minute's had left the window, where the bucket has refilled them gradually all along. Sending T
tokens (T > TPM) can take no less than (T - TPM) / TPM minutes; the bucket here gets there.

Each bucket is kept as GCRA's one number, its *theoretical arrival time* (TAT): the moment the
bucket would be full again. A request costing ``n`` fits when ``max(TAT, now) + n * interval -
now`` stays within the window (``interval`` = window / limit, the refill time of one unit); it
is charged by moving TAT to that sum. Both limits are tested and charged in ONE step - a Lua
script in Redis (its clock: ``TIME``, so hosts' clocks do not matter), a lock in memory - so
no request slot is wasted on a lost race and concurrent workers can never overspend.

What the model leaves to this module:

* **Arrival jitter.** The server charges a request when it *arrives*, a variable moment after
  it was charged here. If arrivals are delayed by between d and d + J, a charge sequence that
  fits buckets of ``window - J`` seconds arrives as one that fits buckets of ``window`` seconds
  (GCRA's cell-delay-variation bound). So each charge must leave ``margin_seconds`` of refill
  in the bucket. This costs the margin's worth of tokens once per burst (a run that keeps the
  budget busy finishes ``margin`` seconds later), never a share of the sustained rate.
  Measured by ``bench/budget.py --jitter`` (8 threads, fake server in the same process, 2
  cores): the charge-to-arrival delay spread is p99.9 35 ms and worst 36 ms with the budget in
  memory, p99.9 66 ms and worst 71 ms on Redis. The default of 1 s covers that 14 times over,
  for stalls of a loaded machine, at a cost of 1 s per run.
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

import random
import threading
import time
from dataclasses import dataclass

import redis

from tidal.errors import ConfigError, ServiceDown, TransientError
from tidal.settings import redact_url

KINDS = ("requests", "tokens")

# KEYS[1]: a hash {requests: TAT, tokens: TAT}, in Redis's own clock (seconds).
# ARGV: margin, then for requests and tokens: interval (0 = unlimited), cost.
# Returns "" once charged, else the seconds to wait, as a string (Lua numbers reach the client
# truncated to integers).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local window, margin = tonumber(ARGV[1]), tonumber(ARGV[2])
local kinds = {'requests', 'tokens'}
local wait, tats = 0, {}
for i, kind in ipairs(kinds) do
  local interval, cost = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  if interval > 0 then
    local tat = tonumber(redis.call('HGET', KEYS[1], kind) or '0')
    local need = cost * interval
    if need > window - margin then
      wait = math.max(wait, tat + margin - now)
    else
      wait = math.max(wait, math.max(tat, now) + need - now - (window - margin))
    end
    tats[kind] = math.max(tat, now) + need
  end
end
if wait > 0 then return string.format('%.6f', wait) end
local last = now
for kind, tat in pairs(tats) do
  redis.call('HSET', KEYS[1], kind, string.format('%.6f', tat))
  last = math.max(last, tat)
end
redis.call('PEXPIRE', KEYS[1], math.ceil((last - now + 1) * 1000))
return ''
"""

# KEYS[1] as above. ARGV: window less margin, age, then for requests and tokens: interval
# (0 = skip), remaining. Moves a TAT later (never earlier) so that what the server reported
# ``age`` seconds ago, plus refill since, is what may be spent now.
_CALIBRATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local window, age = tonumber(ARGV[1]), tonumber(ARGV[2])
local kinds = {'requests', 'tokens'}
local last = now
for i, kind in ipairs(kinds) do
  local interval, remaining = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('HGET', KEYS[1], kind) or '0')
  if interval > 0 then
    local target = now - age + window - remaining * interval
    if target > tat then
      redis.call('HSET', KEYS[1], kind, string.format('%.6f', target))
      tat = target
    end
  end
  last = math.max(last, tat)
end
if last > now then redis.call('PEXPIRE', KEYS[1], math.ceil((last - now + 1) * 1000)) end
return ''
"""


@dataclass(frozen=True)
class _Limit:
    """One bucket: ``interval`` seconds refill one unit; 0 is no limit."""

    interval: float

    def wait(self, tat: float, now: float, cost: int, window: float, margin: float) -> float:
        """Seconds until ``cost`` units fit (<= 0: they fit now). Mirrors ``_ACQUIRE``."""
        need = cost * self.interval
        if need > window - margin:  # bigger than the bucket less its margin: wait for full
            return tat + margin - now
        return max(tat, now) + need - now - (window - margin)


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
        max_wait: float = 300.0,
    ) -> None:
        """``rpm``/``tpm`` are per ``window_seconds`` (60 unless a test shortens it); None is
        no limit. Each charge leaves ``margin_seconds`` of refill unspent (see the module
        docstring). ``acquire`` gives up with TransientError after ``max_wait`` seconds."""
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
        self.namespace = namespace
        self.key = f"tidal:{namespace}:bucket:{rpm}:{tpm}:{window_seconds}:{margin_seconds}"
        self._limits = (
            _Limit(window_seconds / rpm if rpm else 0.0),
            _Limit(window_seconds / tpm if tpm else 0.0),
        )
        self._store: _Store = _MemoryStore() if redis_url is None else _RedisStore(redis_url)

    def acquire(self, tokens: int) -> float:
        """Block until one request of ``tokens`` tokens fits; charge it; return seconds slept.

        The wait is exact (when the buckets will hold the request), plus a little jitter so
        waiting workers do not all retry at the same instant.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if self.tpm is not None and tokens > self.tpm:
            raise ConfigError(
                f"one request of {tokens} tokens can never fit a budget of {self.tpm} tokens "
                f"per {self.window_seconds} s; raise TIDAL_OPENAI_TPM (if the account allows) "
                "or lower TIDAL_EMBED_BATCH_SIZE"
            )
        if not any(limit.interval for limit in self._limits):
            return 0.0
        slept = 0.0
        while True:
            wait = self._store.acquire(self, (1, tokens))
            if wait is None:
                return slept
            wait += random.uniform(0, 0.02)
            if slept + wait > self.max_wait:
                raise TransientError(
                    f"waited {slept:.0f} s for room in the OpenAI budget of {self.rpm} requests "
                    f"and {self.tpm} tokens per {self.window_seconds} s; other workers are using "
                    "it all - lower TIDAL_CONCURRENCY or raise the budget if the account allows"
                )
            time.sleep(wait)
            slept += wait

    def calibrate(
        self, remaining_requests: int | None, remaining_tokens: int | None, age: float
    ) -> None:
        """Drain the buckets to what the server says remains, if that is less than here.

        ``age``: seconds since the answered request was charged. The server counted at its
        arrival, somewhere in that span; assuming the earliest moment credits the most refill,
        so the drain is never more than the server's own words justify. What it reports is
        left spendable (the margin is not taken from it again: a server whose limit is far
        below this budget's would otherwise stall every request). In-flight requests
        charged here but not yet counted there make the server's figure look *higher*, which
        this ignores (it never adds), so they cannot cause a drain either.
        """
        remaining = (remaining_requests, remaining_tokens)
        if all(r is None for r in remaining):
            return
        self._store.calibrate(self, remaining, max(0.0, age))

    def clear(self) -> None:
        """Forget every charge (tests, or after changing the account's limits)."""
        self._store.clear(self.key)


class _Store:
    def acquire(self, budget: RateBudget, costs: tuple[int, int]) -> float | None:
        """None once both costs are charged; else the seconds until they would fit."""
        raise NotImplementedError

    def calibrate(
        self, budget: RateBudget, remaining: tuple[int | None, int | None], age: float
    ) -> None:
        raise NotImplementedError

    def clear(self, key: str) -> None:
        raise NotImplementedError


class _MemoryStore(_Store):
    """This process's buckets: the same arithmetic as the Lua scripts, under one lock."""

    _tats: dict[str, list[float]] = {}
    _lock = threading.Lock()

    def acquire(self, budget: RateBudget, costs: tuple[int, int]) -> float | None:
        window, margin = budget.window_seconds, budget.margin_seconds
        with self._lock:
            now = time.monotonic()
            tats = self._tats.setdefault(budget.key, [0.0, 0.0])
            wait = max(
                limit.wait(tat, now, cost, window, margin) if limit.interval else 0.0
                for limit, tat, cost in zip(budget._limits, tats, costs, strict=True)
            )
            if wait > 0:
                return wait
            for i, (limit, cost) in enumerate(zip(budget._limits, costs, strict=True)):
                tats[i] = max(tats[i], now) + cost * limit.interval
            return None

    def calibrate(
        self, budget: RateBudget, remaining: tuple[int | None, int | None], age: float
    ) -> None:
        with self._lock:
            now = time.monotonic()
            tats = self._tats.setdefault(budget.key, [0.0, 0.0])
            for i, (limit, left) in enumerate(zip(budget._limits, remaining, strict=True)):
                if limit.interval and left is not None:
                    usable = budget.window_seconds - budget.margin_seconds
                    target = now - age + usable - left * limit.interval
                    tats[i] = max(tats[i], target)

    def clear(self, key: str) -> None:
        with self._lock:
            self._tats.pop(key, None)


class _RedisStore(_Store):
    """Buckets every worker shares, tested and charged by one Lua script on Redis's clock."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
        try:
            self._client.ping()
        except redis.RedisError:
            raise ConfigError(
                f"Redis at TIDAL_REDIS_URL ({redact_url(url)}) does not answer; start it, "
                "or fix the URL (the OpenAI budget every worker shares lives there)"
            ) from None
        self._acquire = self._client.register_script(_ACQUIRE)
        self._calibrate = self._client.register_script(_CALIBRATE)

    def acquire(self, budget: RateBudget, costs: tuple[int, int]) -> float | None:
        args: list[float] = [budget.window_seconds, budget.margin_seconds]
        for limit, cost in zip(budget._limits, costs, strict=True):
            args += [limit.interval, cost]
        answer = self._call(self._acquire, budget.key, args)
        return float(answer) if answer else None

    def calibrate(
        self, budget: RateBudget, remaining: tuple[int | None, int | None], age: float
    ) -> None:
        args: list[float] = [budget.window_seconds - budget.margin_seconds, age]
        for limit, left in zip(budget._limits, remaining, strict=True):
            args += [limit.interval if left is not None else 0.0, left or 0]
        self._call(self._calibrate, budget.key, args)

    def clear(self, key: str) -> None:
        self._call(lambda keys, args: self._client.delete(*keys), key, [])

    def _call(self, script, key: str, args: list[float]):  # type: ignore[no-untyped-def]
        try:
            return script(keys=[key], args=[repr(float(a)) for a in args])
        except redis.RedisError as exc:  # Redis unreachable or failing: a retry may find it
            raise ServiceDown(
                f"the OpenAI budget's Redis (TIDAL_REDIS_URL) stopped answering: {exc}"
            ) from exc
