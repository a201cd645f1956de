"""What a failure of the ``supabase`` client means for Tidal: Storage's answers and httpx's
network errors mapped onto the transient/permanent split (``tidal.errors``).

Storage reports most failures as HTTP 400 with the real status in the body's ``statusCode``
(``"404"`` for a missing object or bucket, ``"403"`` for a refused key); storage3 raises those as
``StorageApiError`` carrying that body status, and lets httpx's network errors through as they
are.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from pydantic import ValidationError
from storage3.exceptions import StorageApiError
from storage3.utils import StorageException

from tidal.errors import (
    ConfigError,
    RateLimited,
    SourceError,
    TidalError,
    TransientError,
    Unavailable,
    Unreadable,
)
from tidal.retrying import retry_after

KEY_VARIABLE = "SUPABASE_SERVICE_ROLE_KEY"


def storage_error(
    exc: BaseException,
    doing: str,
    *,
    path: str | None,
    bucket: str,
    timeout: float,
    scrub: Callable[[str], str],
) -> TidalError:
    """Tidal's error for a failure of the client: transient only if a retry may succeed."""
    status = status_of(exc)
    if isinstance(exc, httpx.ConnectTimeout):
        return Unavailable(f"timed out after {timeout:g} s connecting {doing}", path=path)
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"timed out after {timeout:g} s {doing}", path=path)
    if isinstance(exc, (httpx.TransportError, httpx.DecodingError)):
        reason = scrub(f"{type(exc).__name__}: {exc}")
        hint = "; check SUPABASE_URL" if isinstance(exc, httpx.ConnectError) else ""
        # No answer at all (refused, reset, closed mid-answer): the service may be down.
        error = Unavailable if isinstance(exc, httpx.TransportError) else TransientError
        return error(f"network error {doing} ({reason}){hint}", path=path)
    if isinstance(exc, ValidationError):
        return SourceError(f"unexpected answer from Storage {doing}", path=path)
    if not isinstance(exc, StorageException):  # e.g. too many redirects
        return SourceError(scrub(f"{type(exc).__name__} {doing}: {exc}"), path=path)
    message = _plain(scrub(getattr(exc, "message", str(exc))))
    if status in (401, 403):
        # The key, not the file: every other file would be refused too, so the run stops
        # (a fatal error) instead of recording each file as failed for good.
        return ConfigError(
            f"Supabase Storage refused the key {doing} ({message}); "
            f"set {KEY_VARIABLE} to the project's service-role key",
            path=path,
        )
    if status == 404:
        kind = Unreadable if path is not None else SourceError  # gone since it was listed
        return kind(f"not found in bucket {bucket!r}: {message}", path=path)
    asked = retry_after(_header(exc, "retry-after"))
    if status == 429:
        return RateLimited(f"Storage answered 429 {doing}: {message}", path=path, retry_after=asked)
    if status is not None and (status in (408, 425) or status >= 500):
        # A gateway's 502/503/504 says nothing answered behind it: maybe an outage.
        kind = Unavailable if status in (502, 503, 504) else TransientError
        return kind(f"Storage answered {status} {doing}: {message}", path=path, retry_after=asked)
    return SourceError(f"Storage answered {status} {doing}: {message}", path=path)


def _header(exc: BaseException, name: str) -> str | None:
    """A header of the HTTP answer behind a client error (storage3 chains it), if any."""
    seen: BaseException | None = exc
    for _ in range(5):
        if isinstance(seen, httpx.HTTPStatusError):
            return seen.response.headers.get(name)
        if seen is None:
            return None
        seen = seen.__cause__ or seen.__context__
    return None


def status_of(exc: BaseException) -> int | None:
    """The status that decides retrying: the HTTP one if it is a server error, else the body's.

    Storage puts the meaningful status in the body (``"404"`` inside an HTTP 400); a gateway's
    5xx page has no such body, and storage3 then reports the HTTP status itself.
    """
    http: int | None = None
    seen: BaseException | None = exc
    for _ in range(5):  # storage3 chains the HTTPStatusError one or two links down
        if seen is None or isinstance(seen, httpx.HTTPStatusError):
            break
        seen = seen.__cause__ or seen.__context__
    if isinstance(seen, httpx.HTTPStatusError):
        http = seen.response.status_code
    if http is not None and http >= 500:
        return http
    body = exc.status if isinstance(exc, StorageApiError) else None
    try:
        return int(str(body)) if body is not None else http
    except ValueError:
        return http


def _plain(message: str) -> str:
    """storage3's text for an answer it could not parse (a gateway's page), as one short line."""
    text = message.removeprefix("Unable to parse error message:").strip()
    if text.startswith("<"):  # an HTML page: its words only
        text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return (text[:197] + "...") if len(text) > 200 else text or "no message"
