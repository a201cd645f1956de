"""A ``RateBudget`` every worker shares: buckets in one Redis hash, charged by Lua scripts.

Each step is one script, so testing and charging both limits is atomic across workers (no
request slot is lost to a race, no two workers overspend), and every script reads Redis's own
clock (``TIME``), so the hosts' clocks do not matter. ``MemoryStore``
(``tidal.embedders.ratelimit_store``) mirrors the same arithmetic in Python; a change to one is
a change to both. One module for the scripts and the class that passes their ``ARGV``: the
argument order is shared by the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from tidal.embedders.ratelimit_store import LEARNED_SHARE, SLOTS, Store
from tidal.errors import Unavailable
from tidal.redis import connect_redis, redis_service

if TYPE_CHECKING:
    from tidal.embedders.ratelimit import RateBudget

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


class RedisStore(Store):
    """Buckets every worker shares, tested and charged by Lua scripts on Redis's clock."""

    def __init__(self, url: str, outage_seconds: float) -> None:
        self._client = connect_redis(url, holds="the OpenAI budget every worker shares")
        self._acquire = self._client.register_script(_ACQUIRE)
        self._calibrate = self._client.register_script(_CALIBRATE)
        self._slow_down = self._client.register_script(_SLOW_DOWN)
        self._scales = self._client.register_script(
            _PRELUDE + "return string.format('%.9f %.9f', scale('requests', tonumber(ARGV[1]), "
            "tonumber(ARGV[2])), scale('tokens', tonumber(ARGV[1]), tonumber(ARGV[2])))"
        )
        self.service = redis_service(self._client, outage_seconds=outage_seconds)

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

    def _call(self, script, key: str, args: list[float]):  # type: ignore[no-untyped-def]
        def once():  # type: ignore[no-untyped-def]
            try:
                return script(keys=[key], args=[repr(float(a)) for a in args])
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise Unavailable(f"the OpenAI budget's Redis stopped answering: {exc}") from exc

        return self.service.call(once, what="OpenAI budget")
