"""What OpenAI's rate-limit headers say, and how it is fed back to the shared budget.

Every answer (a 429's too) carries ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``;
a 429 may add ``retry-after-ms`` or ``retry-after``. The budget learns from them
(``RateBudget.calibrate``) and a 429 waits as they ask (``retry_delay``). Pure functions of the
headers, apart from ``report``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tidal.embedders.ratelimit_store import KINDS
from tidal.retrying import retry_after

if TYPE_CHECKING:
    from tidal.embedders.ratelimit import RateBudget


def report(
    budget: RateBudget, headers: Mapping[str, str], sent: float, *, answered_tokens: int | None
) -> None:
    """Tell ``budget`` what an answer's headers say: what the server has left and its own
    limits (``RateBudget.calibrate``). ``sent``: the ``time.monotonic()`` the request was
    charged at; ``answered_tokens``: the tokens of a request that succeeded."""
    said = {
        f"{what}-{kind}": _number(headers.get(f"x-ratelimit-{what}-{kind}"))
        for what in ("remaining", "limit")
        for kind in KINDS
    }
    whole = {name: None if value is None else int(value) for name, value in said.items()}
    budget.calibrate(
        whole["remaining-requests"],
        whole["remaining-tokens"],
        age=time.monotonic() - sent,
        answered_tokens=answered_tokens,
        limit_requests=whole["limit-requests"],
        limit_tokens=whole["limit-tokens"],
    )


def limited_kinds(headers: Mapping[str, str], message: str) -> tuple[str, ...]:
    """Which limits a 429 says ran out: by the headers' remaining 0, else by its words
    (``message``); both when it does not say."""
    h = {k.lower(): v for k, v in headers.items()}
    kinds = tuple(k for k in KINDS if h.get(f"x-ratelimit-remaining-{k}") == "0")
    if kinds:
        return kinds
    text = message.lower()
    named = tuple(k for k in KINDS if f" {k} " in f" {text} " or f"on {k}" in text)
    return named or KINDS


def retry_delay(headers: Mapping[str, str]) -> float | None:
    """Seconds a 429 asks to wait, or None if it does not say.

    ``retry-after-ms`` first (OpenAI's, finer), then ``retry-after`` (seconds or an HTTP
    date), then the ``x-ratelimit-reset-*`` of whichever limit has nothing remaining - or the
    longer reset, when neither says it is exhausted.
    """
    h = {k.lower(): v for k, v in headers.items()}
    if (ms := _number(h.get("retry-after-ms"))) is not None:
        return max(0.0, ms / 1000)
    if (seconds := retry_after(h.get("retry-after"))) is not None:
        return seconds
    resets = {kind: parse_duration(h.get(f"x-ratelimit-reset-{kind}")) for kind in KINDS}
    exhausted = [
        r
        for kind, r in resets.items()
        if r is not None and h.get(f"x-ratelimit-remaining-{kind}") == "0"
    ]
    known = exhausted or [r for r in resets.values() if r is not None]
    return max(known) if known else None


_DURATION = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+(?:\.\d+)?)ms)?"
)


def parse_duration(value: str | None) -> float | None:
    """Seconds in OpenAI's reset format (``20ms``, ``1.5s``, ``6m0s``, ``1h2m3s``), else None."""
    if not value:
        return None
    value = value.strip()
    if (plain := _number(value)) is not None:
        return plain
    match = _DURATION.fullmatch(value)
    if not match or not any(match.groupdict().values()):
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return (
        parts.get("h", 0) * 3600
        + parts.get("m", 0) * 60
        + parts.get("s", 0)
        + parts.get("ms", 0) / 1000
    )


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
