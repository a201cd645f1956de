"""Tidal's exceptions, split by what the orchestrator should do with them.

    TidalError
    ├── TransientError        retried with backoff (timeouts, 429, 5xx, dropped connections)
    │   ├── Unavailable       no answer at all (refused, reset, a gateway's 502/503/504): the
    │   │                     service may be down; waited out without spending attempts
    │   ├── RateLimited       429, "later": waited out as asked, never an attempt
    │   ├── ServiceDown       a service every file needs stayed down past TIDAL_OUTAGE_SECONDS
    │   │                     (tidal.retrying): it stops the run instead of failing each file
    │   └── ClaimLost         another run took a file's claim over mid-file (it thought this
    │                         one gone): nothing was written, the file starts over at once
    └── PermanentError        fails its file at once, never retried
        ├── ParseError        the file itself is bad (binary, invalid JSON, no text)
        ├── SourceError       the source refuses the path (escapes the root, missing)
        │   └── Unreadable    not readable when the run reached it (deleted meanwhile,
        │                     permission denied): fails this run, tried again by the next
        └── ConfigError       a setting is wrong: fatal, it stops the whole run at once
                              (bad or revoked key, no quota, unknown model, wrong width)

Every error that concerns one file carries its ``path`` so a failure report can name it, and
the task sets ``attempts`` before giving up so the report can say how hard it tried.
"""

from __future__ import annotations


class TidalError(Exception):
    """Base of every error Tidal raises on purpose."""

    kind = "error"

    def __init__(
        self, message: str, *, path: str | None = None, attempts: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.attempts = attempts

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __reduce__(self):  # keep ``path`` when Prefect pickles the exception into a state
        return (_rebuild, (type(self), self.message, self.path, self.attempts))


def _rebuild(
    cls: type[TidalError], message: str, path: str | None, attempts: int | None
) -> TidalError:
    return cls(message, path=path, attempts=attempts)


class TransientError(TidalError):
    """Worth another attempt: the same call may succeed later, after ``retry_after`` seconds
    when the service said so (a ``Retry-After`` header)."""

    kind = "transient"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        attempts: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, path=path, attempts=attempts)
        self.retry_after = retry_after


class Unavailable(TransientError):
    """The service did not answer: refused or dropped connection, or a gateway's 502/503/504."""


class RateLimited(TransientError):
    """The service answered 429: later, not never."""


class ServiceDown(TransientError):
    """A service the whole run needs is not answering; the message names its variable."""


class ClaimLost(TransientError):
    """A file's claim was taken over before its write: its store's presence connection was
    gone for a moment (a restart, a failover), and another run took it for dead.

    Nothing of the file was written. Starting the file over claims it again, which waits for
    the other run to finish it; the file is then usually found current, and skipped.
    """


class PermanentError(TidalError):
    """Retrying cannot help; the file (or the configuration) must change first."""

    kind = "permanent"


class ParseError(PermanentError):
    """The file's bytes cannot be turned into text."""


class SourceError(PermanentError):
    """The source cannot or will not hand out this path."""


class Unreadable(SourceError):
    """Listed, but not handed out when the run reached it: gone meanwhile, or not readable.

    Nothing is wrong with the bytes, so it is not "unchanged since it failed": the next run
    tries it again (and a file that is gone by then is a deletion).
    """

    kind = "unreadable"


class NothingToIndex(ParseError):
    """The document holds no text (0 bytes, only whitespace, JSON with no values): not a
    failure, it is ignored with this reason and indexed as no chunks."""


class ConfigError(PermanentError):
    """A setting is invalid; the message names the variable and the fix."""


def is_transient(exc: BaseException) -> bool:
    """Whether a retry might help.

    Tidal's own errors say so explicitly; of the rest, only the standard library's network
    failures count as transient, so a bug (KeyError, TypeError...) is never retried into a
    three-fold slower failure.
    """
    if isinstance(exc, TidalError):
        return isinstance(exc, TransientError)
    return isinstance(exc, (ConnectionError, TimeoutError))


def error_kind(exc: BaseException) -> str:
    """``transient``, ``unreadable`` or ``permanent``, as recorded next to a failed file."""
    if isinstance(exc, Unreadable):
        return Unreadable.kind
    return "transient" if is_transient(exc) else "permanent"


def is_fatal(exc: BaseException) -> bool:
    """Whether the error is the run's, not the file's: no other file can succeed either.

    A refused key or a vector-width mismatch fails every file the same way, and so does a
    service that stayed down through a file's retries: the run stops at the first one
    instead of recording the whole corpus as failed.
    """
    return isinstance(exc, ConfigError | ServiceDown)
