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

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis

from tidal.errors import ConfigError, TransientError, Unavailable
from tidal.retrying import OUTAGE_SECONDS, Service
from tidal.settings import redact_url

log = logging.getLogger("tidal.embedders.ratelimit")

KINDS = ("requests", "tokens")
SLOTS = 12
"""Answered requests are counted in this many slots per window (what a 429 learns from)."""
LEARNED_SHARE = 0.9
"""A 429 sets the rate to this share of what the server let through over the last window."""

# Shared by the scripts. State, a hash at KEYS[1], in Redis's own clock (seconds):
#   <kind>: the bucket's TAT;  scale:<kind>, hit:<kind>: the rate's share of the configured
#   limit as the last 429 left it, and when (it climbs back a quiet window after);  cut:<kind>:
#   when a 429 last lowered it;  ceil:<kind>: the server's own limit as a share of the
#   configured one (from x-ratelimit-limit-*);  ok:<slot>: "id count tokens" of answers.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local key = KEYS[1]
local function num(field, default)
  local v = redis.call('HGET', key, field)
  if v then return tonumber(v) end
  return default
end
local function scale(kind, window, recover)
  local s = num('scale:' .. kind, 1)
  if s < 1 then
    local quiet = now - num('hit:' .. kind, 0) - window
    if quiet > 0 then s = s * 2 ^ (quiet / recover) end
  end
  return math.min(s, 1, num('ceil:' .. kind, 1))
end
local function keep(last, window, recover)
  for _, kind in ipairs({'requests', 'tokens'}) do
    if num('scale:' .. kind, 1) < 1 then last = math.max(last, now + window + 10 * recover) end
  end
  if last > now then redis.call('PEXPIRE', key, math.ceil((last - now + 1) * 1000)) end
end
"""

# ARGV: window, margin, max_wait (< 0: none), recover, then for requests and tokens: base
# interval (0 = unlimited), cost. Charges both limits at the moment the request may go and
# returns the seconds until then; or, past max_wait, charges nothing and returns "!<wait>".
_ACQUIRE = (
    _PRELUDE
    + """
local window, margin = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_wait, recover = tonumber(ARGV[3]), tonumber(ARGV[4])
local kinds = {'requests', 'tokens'}
local wait, tats, needs = 0, {}, {}
for i, kind in ipairs(kinds) do
  local base, cost = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  if base > 0 then
    local tat = num(kind, 0)
    local need = cost * base / scale(kind, window, recover)
    if need > window - margin then
      wait = math.max(wait, tat + margin - now)
    else
      wait = math.max(wait, math.max(tat, now) + need - now - (window - margin))
    end
    tats[kind], needs[kind] = tat, need
  end
end
if max_wait >= 0 and wait > max_wait then return '!' .. string.format('%.6f', wait) end
local at = now + wait
local last = now
for kind, tat in pairs(tats) do
  local charged = math.max(tat, at) + needs[kind]
  redis.call('HSET', key, kind, string.format('%.6f', charged))
  last = math.max(last, charged)
end
keep(math.max(last, now + window), window, recover)
return string.format('%.6f', wait)
"""
)

# ARGV: window, margin, recover, age, answered (1/0), tokens answered, then for requests and
# tokens: base interval (0 = skip), remaining (< 0: not said), server limit (< 0: not said),
# configured limit. Counts an answer, drains a TAT to what the server says remains (never
# adds), and takes the server's limit as the ceiling.
_CALIBRATE = (
    _PRELUDE
    + """
local window, margin = tonumber(ARGV[1]), tonumber(ARGV[2])
local recover, age = tonumber(ARGV[3]), tonumber(ARGV[4])
if tonumber(ARGV[5]) > 0 then
  local width = window / __SLOTS__
  local id = math.floor(now / width)
  local field = 'ok:' .. (id % __SLOTS__)
  local n, tokens = 0, 0
  local v = redis.call('HGET', key, field)
  if v then
    local sid, sn, st = string.match(v, '(%S+) (%S+) (%S+)')
    if tonumber(sid) == id then n, tokens = tonumber(sn), tonumber(st) end
  end
  redis.call('HSET', key, field, id .. ' ' .. (n + 1) .. ' ' .. (tokens + tonumber(ARGV[6])))
end
local kinds = {'requests', 'tokens'}
local last = now + window
for i, kind in ipairs(kinds) do
  local base, remaining = tonumber(ARGV[3 + 4 * i]), tonumber(ARGV[4 + 4 * i])
  local limit, configured = tonumber(ARGV[5 + 4 * i]), tonumber(ARGV[6 + 4 * i])
  if base > 0 then
    if limit > 0 then redis.call('HSET', key, 'ceil:' .. kind, math.min(1, limit / configured)) end
    if remaining >= 0 then
      local target = now - age + window - margin - remaining * base / scale(kind, window, recover)
      if target > num(kind, 0) then
        redis.call('HSET', key, kind, string.format('%.6f', target))
        last = math.max(last, target)
      end
    end
  end
end
keep(last, window, recover)
return ''
""".replace("__SLOTS__", str(SLOTS))
)

# ARGV: window, margin, recover, share, after, then for requests and tokens: base interval
# (0 = skip), cut (1/0), configured limit. A 429: each named limit's bucket is empty when the
# server said to come back (``after`` seconds from now), so the requests waiting for that
# moment go out paced, not in one burst a sliding window would refuse; and its rate drops
# to ``share`` of what was answered over the last window when that is lower (halved if nothing
# was), at most once per window. Returns the new scales, "r t".
_SLOW_DOWN = (
    _PRELUDE
    + """
local window, margin = tonumber(ARGV[1]), tonumber(ARGV[2])
local recover, share = tonumber(ARGV[3]), tonumber(ARGV[4])
local after = tonumber(ARGV[5])
local width = window / __SLOTS__
local id = math.floor(now / width)
local answered = {0, 0}
for slot = 0, __SLOTS__ - 1 do
  local v = redis.call('HGET', key, 'ok:' .. slot)
  if v then
    local sid, sn, st = string.match(v, '(%S+) (%S+) (%S+)')
    if id - tonumber(sid) < __SLOTS__ then
      answered[1] = answered[1] + tonumber(sn)
      answered[2] = answered[2] + tonumber(st)
    end
  end
end
local kinds = {'requests', 'tokens'}
local scales = {}
for i, kind in ipairs(kinds) do
  local base, cut = tonumber(ARGV[3 + 3 * i]), tonumber(ARGV[4 + 3 * i])
  local configured = tonumber(ARGV[5 + 3 * i])
  local current = scale(kind, window, recover)
  scales[i] = current
  if base > 0 and cut > 0 then
    if now - num('cut:' .. kind, -1e18) > window then
      local learned = share * answered[i] / configured
      if answered[i] <= 0 then learned = current / 2 end
      if learned < current then
        scales[i] = math.max(learned, 1 / configured)
        redis.call('HSET', key, 'cut:' .. kind, string.format('%.6f', now))
      end
    end
    -- Any 429 ends the recovery so far: the rate stays where it is, and climbs again only
    -- after a quiet window.
    redis.call('HSET', key, 'scale:' .. kind, string.format('%.9f', scales[i]))
    redis.call('HSET', key, 'hit:' .. kind, string.format('%.6f', now))
    local empty = now + after + window - margin
    if empty > num(kind, 0) then redis.call('HSET', key, kind, string.format('%.6f', empty)) end
  end
end
keep(now + window, window, recover)
return string.format('%.9f %.9f', scales[1], scales[2])
""".replace("__SLOTS__", str(SLOTS))
)


@dataclass
class _State:
    """One budget's state in this process: the same fields as the Redis hash."""

    tat: list[float] = field(default_factory=lambda: [0.0, 0.0])
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    cut: list[float] = field(default_factory=lambda: [-1e18, -1e18])
    hit: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """When each limit last met a 429: its rate climbs back a quiet window after."""
    ceil: list[float] = field(default_factory=lambda: [1.0, 1.0])
    slots: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def effective(self, i: int, now: float, window: float, recover: float) -> float:
        """Mirrors the scripts' ``scale``."""
        s = self.scale[i]
        if s < 1:
            quiet = now - self.hit[i] - window
            if quiet > 0:
                s *= 2 ** (quiet / recover)
        return min(s, 1.0, self.ceil[i])


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
        self._store: _Store = (
            _MemoryStore() if redis_url is None else _RedisStore(redis_url, outage_seconds)
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


class _Store:
    def acquire(self, budget: RateBudget, costs: tuple[int, int]) -> tuple[float, bool]:
        """(seconds until the request may go, whether it was charged)."""
        raise NotImplementedError

    def calibrate(
        self,
        budget: RateBudget,
        remaining: tuple[int | None, int | None],
        limits: tuple[int | None, int | None],
        age: float,
        answered_tokens: int | None,
    ) -> None:
        raise NotImplementedError

    def slow_down(
        self, budget: RateBudget, cut: tuple[int, int], after: float
    ) -> tuple[float, float]:
        raise NotImplementedError

    def scales(self, budget: RateBudget) -> tuple[float, float]:
        raise NotImplementedError

    def clear(self, key: str) -> None:
        raise NotImplementedError


class _MemoryStore(_Store):
    """This process's buckets: the same arithmetic as the Lua scripts, under one lock."""

    _states: dict[str, _State] = {}
    _lock = threading.Lock()

    def _state(self, budget: RateBudget) -> _State:
        return self._states.setdefault(budget.key, _State())

    def acquire(self, budget: RateBudget, costs: tuple[int, int]) -> tuple[float, bool]:
        window, margin = budget.window_seconds, budget.margin_seconds
        with self._lock:
            now = time.monotonic()
            state = self._state(budget)
            wait, needs = 0.0, [0.0, 0.0]
            for i, (base, cost) in enumerate(zip(budget.intervals, costs, strict=True)):
                if not base:
                    continue
                tat = state.tat[i]
                needs[i] = cost * base / state.effective(i, now, window, budget.recover_seconds)
                if needs[i] > window - margin:  # bigger than the bucket less its margin
                    wait = max(wait, tat + margin - now)
                else:
                    wait = max(wait, max(tat, now) + needs[i] - now - (window - margin))
            if budget.max_wait is not None and wait > budget.max_wait:
                return wait, False
            at = now + max(wait, 0.0)
            for i, base in enumerate(budget.intervals):
                if base:
                    state.tat[i] = max(state.tat[i], at) + needs[i]
            return max(wait, 0.0), True

    def calibrate(
        self,
        budget: RateBudget,
        remaining: tuple[int | None, int | None],
        limits: tuple[int | None, int | None],
        age: float,
        answered_tokens: int | None,
    ) -> None:
        window = budget.window_seconds
        with self._lock:
            now = time.monotonic()
            state = self._state(budget)
            if answered_tokens is not None:
                width = window / SLOTS
                slot = math.floor(now / width)
                seen, n, tokens = state.slots.get(slot % SLOTS, (slot, 0, 0))
                if seen != slot:
                    n, tokens = 0, 0
                state.slots[slot % SLOTS] = (slot, n + 1, tokens + answered_tokens)
            for i, base in enumerate(budget.intervals):
                if not base:
                    continue
                limit, configured = limits[i], budget.limits[i]
                if limit is not None and limit > 0 and configured:
                    state.ceil[i] = min(1.0, limit / configured)
                if remaining[i] is not None:
                    interval = base / state.effective(i, now, window, budget.recover_seconds)
                    usable = window - budget.margin_seconds
                    target = now - age + usable - remaining[i] * interval
                    state.tat[i] = max(state.tat[i], target)

    def slow_down(
        self, budget: RateBudget, cut: tuple[int, int], after: float
    ) -> tuple[float, float]:
        window = budget.window_seconds
        with self._lock:
            now = time.monotonic()
            state = self._state(budget)
            slot = math.floor(now / (window / SLOTS))
            answered = [0, 0]
            for seen, n, tokens in state.slots.values():
                if slot - seen < SLOTS:
                    answered[0] += n
                    answered[1] += tokens
            scales = []
            for i, base in enumerate(budget.intervals):
                current = state.effective(i, now, window, budget.recover_seconds)
                configured = budget.limits[i]
                if base and configured and cut[i]:
                    if now - state.cut[i] > window:
                        learned = LEARNED_SHARE * answered[i] / configured
                        if answered[i] <= 0:
                            learned = current / 2
                        if learned < current:
                            current = max(learned, 1 / configured)
                            state.cut[i] = now
                    state.scale[i], state.hit[i] = current, now
                    state.tat[i] = max(state.tat[i], now + after + window - budget.margin_seconds)
                scales.append(current)
            return scales[0], scales[1]

    def scales(self, budget: RateBudget) -> tuple[float, float]:
        with self._lock:
            state, now = self._state(budget), time.monotonic()
            window, recover = budget.window_seconds, budget.recover_seconds
            return state.effective(0, now, window, recover), state.effective(
                1, now, window, recover
            )

    def clear(self, key: str) -> None:
        with self._lock:
            self._states.pop(key, None)


class _RedisStore(_Store):
    """Buckets every worker shares, tested and charged by Lua scripts on Redis's clock."""

    def __init__(self, url: str, outage_seconds: float) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
        try:
            self._client.ping()
        except redis.AuthenticationError:
            raise ConfigError(
                f"Redis at TIDAL_REDIS_URL ({redact_url(url)}) refused the credentials; fix "
                "the user and password in the URL"
            ) from None
        except redis.RedisError:
            raise ConfigError(
                f"Redis at TIDAL_REDIS_URL ({redact_url(url)}) does not answer; start it, "
                "or fix the URL (the OpenAI budget every worker shares lives there)"
            ) from None
        self._acquire = self._client.register_script(_ACQUIRE)
        self._calibrate = self._client.register_script(_CALIBRATE)
        self._slow_down = self._client.register_script(_SLOW_DOWN)
        self._scales = self._client.register_script(
            _PRELUDE + "return string.format('%.9f %.9f', scale('requests', tonumber(ARGV[1]), "
            "tonumber(ARGV[2])), scale('tokens', tonumber(ARGV[1]), tonumber(ARGV[2])))"
        )
        self.service = Service(
            "Redis", "TIDAL_REDIS_URL", self._ping, outage_seconds=outage_seconds
        )
        self.service.answered()

    def acquire(self, budget: RateBudget, costs: tuple[int, int]) -> tuple[float, bool]:
        args: list[float] = [
            budget.window_seconds,
            budget.margin_seconds,
            -1.0 if budget.max_wait is None else budget.max_wait,
            budget.recover_seconds,
        ]
        for base, cost in zip(budget.intervals, costs, strict=True):
            args += [base, cost]
        answer = self._call(self._acquire, budget.key, args).decode()
        return float(answer.lstrip("!")), not answer.startswith("!")

    def calibrate(
        self,
        budget: RateBudget,
        remaining: tuple[int | None, int | None],
        limits: tuple[int | None, int | None],
        age: float,
        answered_tokens: int | None,
    ) -> None:
        args: list[float] = [
            budget.window_seconds,
            budget.margin_seconds,
            budget.recover_seconds,
            age,
            0 if answered_tokens is None else 1,
            answered_tokens or 0,
        ]
        for base, left, limit, configured in zip(
            budget.intervals, remaining, limits, budget.limits, strict=True
        ):
            args += [
                base,
                -1 if left is None else left,
                -1 if limit is None else limit,
                configured or 1,
            ]
        self._call(self._calibrate, budget.key, args)

    def slow_down(
        self, budget: RateBudget, cut: tuple[int, int], after: float
    ) -> tuple[float, float]:
        args: list[float] = [
            budget.window_seconds,
            budget.margin_seconds,
            budget.recover_seconds,
            LEARNED_SHARE,
            after,
        ]
        for base, one, configured in zip(budget.intervals, cut, budget.limits, strict=True):
            args += [base, one, configured or 1]
        requests, tokens = self._call(self._slow_down, budget.key, args).decode().split()
        return float(requests), float(tokens)

    def scales(self, budget: RateBudget) -> tuple[float, float]:
        args = [budget.window_seconds, budget.recover_seconds]
        requests, tokens = self._call(self._scales, budget.key, args).decode().split()
        return float(requests), float(tokens)

    def clear(self, key: str) -> None:
        self._call(lambda keys, args: self._client.delete(*keys), key, [])

    def _ping(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis does not answer: {exc}") from exc

    def _call(self, script, key: str, args: list[float]):  # type: ignore[no-untyped-def]
        def once():  # type: ignore[no-untyped-def]
            try:
                return script(keys=[key], args=[repr(float(a)) for a in args])
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise Unavailable(f"the OpenAI budget's Redis stopped answering: {exc}") from exc

        return self.service.call(once, what="OpenAI budget")
