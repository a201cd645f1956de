"""How Tidal waits: one policy for every call to a service that is safe to repeat.

A failed request is one of three things, and each gets its own answer:

* **A failure of this request** (a timeout, a 500, a reset the service shrugs off): a few
  quick tries with jittered backoff inside a time cap (``Policy``). What persists fails the
  attempt, and the task's own retries (Prefect's ``exponential_backoff``) decide when the file
  is tried again.
* **The service is down** (``Unavailable``: connection refused or reset, a gateway's
  502/503/504, for every request and not just this one): not the file's fault, so it costs no
  attempt. The first call that meets it asks the service's probe (one cheap request); if the
  probe fails too, the service is marked down, every call to it waits at its gate, and one
  probe at a time is sent with backoff until it answers. Only an outage longer than
  ``outage_seconds`` (``TIDAL_OUTAGE_SECONDS``) raises ``ServiceDown``, which stops the run with
  everything done kept.
* **"Later"** (``RateLimited``: a 429): the service answered and asked to wait; the call waits
  what it asked (or a backoff), never as an attempt. Only a service that lets nothing through
  for ``outage_seconds`` stops the run.

A service that has never answered in this process is not ridden out: a wrong URL at start-up
fails after the quick tries, at once, naming the variable.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tidal.errors import (
    ClaimLost,
    PermanentError,
    RateLimited,
    ServiceDown,
    TransientError,
    Unavailable,
)

log = logging.getLogger("tidal.retrying")

T = TypeVar("T")

OUTAGE_SECONDS = 300.0
"""How long a service may stay down before the run stops (``TIDAL_OUTAGE_SECONDS``)."""


@dataclass(frozen=True)
class Policy:
    """Quick tries for the failures of one request: up to ``attempts`` tries, waits doubling
    from ``first_delay`` (at most ``max_delay``, full jitter), never past ``total`` seconds."""

    attempts: int = 5
    first_delay: float = 0.1
    max_delay: float = 2.0
    total: float = 10.0

    def delay(self, attempt: int, exc: TransientError | None = None) -> float:
        """The server's ``retry_after`` when it named one, else jittered exponential backoff."""
        asked = exc.retry_after if exc is not None else None
        if asked is not None and asked >= 0:
            return float(asked)
        return random.uniform(0, min(self.max_delay, self.first_delay * 2 ** (attempt - 1)))


IDEMPOTENT_READS = Policy()
"""The policy for downloads, listing pages and lookups."""
RATE_LIMIT_BACKOFF = Policy(attempts=1_000_000, first_delay=1.0, max_delay=20.0, total=float("inf"))
"""Waits after a 429 that names none: 1, 2, 4 ... 20 s, jittered."""


class Service:
    """One dependency's health in this process, shared by every call to it.

    ``name`` is what a person calls it ("Supabase Storage"), ``variable`` the setting that
    points at it, ``probe`` one cheap request that raises ``Unavailable`` while it is down.
    """

    def __init__(
        self,
        name: str,
        variable: str,
        probe: Callable[[], object],
        *,
        outage_seconds: float = OUTAGE_SECONDS,
        max_probe_delay: float = 5.0,
    ) -> None:
        if outage_seconds <= 0:
            raise ValueError(f"outage_seconds must be positive, got {outage_seconds}")
        self.name = name
        self.variable = variable
        self.outage_seconds = outage_seconds
        self._probe = probe
        self._max_probe_delay = max_probe_delay
        self._lock = threading.Condition()
        self._answered_at: float | None = None
        """When the service last answered anything (a 404, a 429 and a 500 are answers)."""
        self._succeeded_at: float | None = None
        self._down_since: float | None = None
        self._down_reason = ""
        self._probing = False
        self._next_probe = 0.0
        self._probe_delay = 0.5
        self._given_up = False
        """An outage outlasted the limit: each call probes once, and fails if still down."""
        self.sleep: Callable[[float], object] = time.sleep
        """How a call waits between tries (a test records the waits instead)."""
        self.outages = 0
        """Outages seen so far (each declared by a failed probe), for reports and tests."""

    def __repr__(self) -> str:
        return f"Service({self.name!r})"

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def answered(self) -> None:
        """Note an answer got outside ``call`` (e.g. a start-up check): the service is up."""
        self._note_answer(success=True)

    def call(self, fn: Callable[[], T], *, what: str, policy: Policy = IDEMPOTENT_READS) -> T:
        """``fn()``, waiting out an outage and 429s, and retrying a request's own failures."""
        started = time.monotonic()
        deadline = started + policy.total
        tries = 0
        limited = 0
        while True:
            self._wait_while_down()
            sent = time.monotonic()
            try:
                result = fn()
            except RateLimited as exc:
                self._note_answer(success=False)
                limited += 1
                wait = exc.retry_after
                if wait is None:
                    wait = RATE_LIMIT_BACKOFF.delay(min(limited, 6))
                self._give_up_on_limits(exc, wait, started)
                log.info("%s: %s; waiting %.2f s", what, exc.message, wait)
                self.sleep(wait)
                continue
            except (ServiceDown, ClaimLost):
                raise  # a service this call depends on gave up; a file to start over
            except Unavailable as exc:
                if self._confirmed_down(exc, sent):
                    continue  # not this request's fault: wait at the gate, no attempt spent
                tries += 1
                if not self._retry_quickly(policy, tries, deadline, exc, what):
                    raise
            except TransientError as exc:
                tries += 1
                if not self._retry_quickly(policy, tries, deadline, exc, what):
                    raise
            except PermanentError:
                self._note_answer(success=False)  # the service answered: "no"
                raise
            else:
                self._note_answer(success=True)
                return result

    # -- the gate ----------------------------------------------------------------------------

    def _retry_quickly(
        self, policy: Policy, tries: int, deadline: float, exc: TransientError, what: str
    ) -> bool:
        wait = policy.delay(tries, exc)
        if tries >= policy.attempts or time.monotonic() + wait > deadline:
            return False
        log.debug("%s: %s; quick retry %d in %.2f s", what, exc.message, tries, wait)
        self.sleep(wait)
        return True

    def _note_answer(self, *, success: bool) -> None:
        with self._lock:
            now = time.monotonic()
            self._answered_at = now
            if success:
                self._succeeded_at = now
            if self._down_since is not None:
                log.warning(
                    "%s answers again after %.0f s down; carrying on",
                    self.name,
                    now - self._down_since,
                )
                self._down_since = None
                self._given_up = False
                self._probe_delay = 0.5
                self._lock.notify_all()

    def _confirmed_down(self, exc: Unavailable, sent: float) -> bool:
        """Whether ``exc`` means the service is down (wait), not that this request failed.

        An answer to anyone since the request was sent means the service is up; otherwise one
        probe decides (one at a time: the others wait for its verdict). A service that never
        answered in this process is never waited for: that is a wrong address, not an outage.
        """
        with self._lock:
            while True:
                if self._answered_at is None:
                    return False
                if self._down_since is not None:
                    return True
                if self._answered_at >= sent:
                    return False
                if not self._probing:
                    break
                self._lock.wait(timeout=1.0)
            if self._probe_in_turn():
                return False
            if self._down_since is None:
                self._down_since = time.monotonic()
                self._down_reason = exc.message
                self._next_probe = self._down_since + self._probe_delay
                self.outages += 1
                log.warning(
                    "%s does not answer (%s); holding its work and probing it, for up to %g s "
                    "(TIDAL_OUTAGE_SECONDS)",
                    self.name,
                    exc.message,
                    self.outage_seconds,
                )
        return True

    def _probe_in_turn(self) -> bool:
        """With the lock held and no probe in flight: probe, the lock released meanwhile so the
        others can wait on it; whether the service answered. Wakes every waiter after."""
        self._probing = True
        self._lock.release()
        try:
            return self._probe_once()
        finally:
            self._lock.acquire()
            self._probing = False
            self._lock.notify_all()

    def _probe_once(self) -> bool:
        """Whether the probe got an answer; only ``Unavailable`` says no."""
        try:
            self._probe()
        except Unavailable:
            return False
        except Exception:  # noqa: BLE001 - any other answer (a 404, a 429, a refused key) is one
            pass
        self._note_answer(success=False)
        return True

    def _wait_while_down(self) -> None:
        """Block while the service is down, probing it when it is this thread's turn."""
        with self._lock:
            while self._given_up:  # a run stopped on it: one probe says whether it is back
                if self._probing:
                    self._lock.wait(timeout=1.0)
                    continue
                if not self._probe_in_turn():
                    raise self._service_down()
            while self._down_since is not None:
                now = time.monotonic()
                if now - self._down_since > self.outage_seconds:
                    self._given_up = True
                    self._lock.notify_all()
                    raise self._service_down()
                if not self._probing and now >= self._next_probe:
                    if not self._probe_in_turn() and self._down_since is not None:
                        self._probe_delay = min(self._probe_delay * 2, self._max_probe_delay)
                        self._next_probe = time.monotonic() + random.uniform(
                            self._probe_delay / 2, self._probe_delay
                        )
                    continue
                until = min(self._next_probe, self._down_since + self.outage_seconds) - now
                self._lock.wait(timeout=max(0.01, min(until, 1.0)))

    def _service_down(self) -> ServiceDown:
        return ServiceDown(
            f"{self.name} did not answer for {self.outage_seconds:g} s ({self._down_reason}); "
            f"check {self.variable}, or raise TIDAL_OUTAGE_SECONDS to wait longer"
        )

    def _give_up_on_limits(self, exc: RateLimited, wait: float, call_started: float) -> None:
        """Stop a run whose every request has met 429s for ``outage_seconds``."""
        with self._lock:
            since = max(self._succeeded_at or 0.0, call_started)
        if time.monotonic() + wait - since > self.outage_seconds:
            raise ServiceDown(
                f"{self.name} let no request through for {self.outage_seconds:g} s "
                f"({exc.message}); check the account's limits, or lower the request rate"
            ) from exc


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
