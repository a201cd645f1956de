"""Where a ``RateBudget``'s buckets live: the store interface, and the one in this process.

``MemoryStore`` does the same arithmetic as the Lua scripts of ``RedisStore``
(``tidal.embedders.ratelimit_redis``) under one lock, on this process's monotonic clock: a
budget without Redis behaves as one with it, for the threads of one process.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidal.embedders.ratelimit import RateBudget

KINDS = ("requests", "tokens")
SLOTS = 12
"""Answered requests are counted in this many slots per window (what a 429 learns from)."""
LEARNED_SHARE = 0.9
"""A 429 sets the rate to this share of what the server let through over the last window."""


class Store(ABC):
    """Where a budget's buckets live: each step ``RateBudget`` takes, done atomically."""

    @abstractmethod
    def acquire(self, budget: RateBudget, costs: tuple[int, int]) -> tuple[float, bool]:
        """(seconds until the request may go, whether it was charged)."""

    @abstractmethod
    def calibrate(
        self,
        budget: RateBudget,
        remaining: tuple[int | None, int | None],
        limits: tuple[int | None, int | None],
        age: float,
        answered_tokens: int | None,
    ) -> None:
        """Take in an answer's rate-limit headers (``RateBudget.calibrate``)."""

    @abstractmethod
    def slow_down(
        self, budget: RateBudget, cut: tuple[int, int], after: float
    ) -> tuple[float, float]:
        """A 429 within the budget (``RateBudget.slow_down``); the new scales."""

    @abstractmethod
    def scales(self, budget: RateBudget) -> tuple[float, float]:
        """The current shares of the configured rates."""

    @abstractmethod
    def clear(self, key: str) -> None:
        """Forget the budget at ``key``."""


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


class MemoryStore(Store):
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
