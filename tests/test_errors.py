"""Which failures are retried, and how Tidal's errors survive pickling (Prefect state storage)."""

from __future__ import annotations

import pickle

import pytest

from tidal.errors import (
    ConfigError,
    ParseError,
    PermanentError,
    SourceError,
    TidalError,
    TransientError,
    error_kind,
    is_transient,
)


class _CustomTransient(TransientError):
    """A subclass defined elsewhere still counts as transient."""


@pytest.mark.parametrize(
    "exc",
    [
        TransientError("rate limited"),
        _CustomTransient("503 from the embedder", path="a.json"),
        ConnectionError("connection refused"),
        ConnectionResetError("peer reset"),
        TimeoutError("read timed out"),
        ConnectionAbortedError("aborted"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert is_transient(exc) is True
    assert error_kind(exc) == "transient"


@pytest.mark.parametrize(
    "exc",
    [
        PermanentError("no"),
        ParseError("file is empty", path="prds/a.md"),
        SourceError("path escapes the source root", path="../x"),
        ConfigError("invalid configuration"),
        TidalError("a bare Tidal error does not claim to be transient"),
        KeyError("missing"),
        TypeError("bug"),
        ValueError("bug"),
        OSError("disk on fire"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_are_permanent(exc: BaseException) -> None:
    assert is_transient(exc) is False
    assert error_kind(exc) == "permanent"


def test_tidal_error_that_wraps_a_network_failure_follows_its_own_class() -> None:
    # A PermanentError is never retried, even when raised from a ConnectionError.
    try:
        try:
            raise ConnectionError("refused")
        except ConnectionError as inner:
            raise PermanentError("bad credentials") from inner
    except PermanentError as exc:
        assert not is_transient(exc)


def test_str_names_the_path_when_there_is_one() -> None:
    assert str(ParseError("file is empty", path="prds/a.md")) == "prds/a.md: file is empty"
    assert str(ConfigError("invalid configuration")) == "invalid configuration"


@pytest.mark.parametrize(
    "exc",
    [
        ParseError("file is binary", path="designs/t/x.json", attempts=1),
        SourceError("file vanished", path="prds/gone.md", attempts=None),
        TransientError("timed out", path="prds/slow.md", attempts=4),
        ConfigError("TIDAL_CONCURRENCY: bad"),
        _CustomTransient("429", path="a.json", attempts=2),
    ],
    ids=lambda e: type(e).__name__,
)
def test_pickling_round_trips_class_message_path_and_attempts(exc: TidalError) -> None:
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is type(exc)
    assert clone.message == exc.message
    assert clone.path == exc.path
    assert clone.attempts == exc.attempts
    assert str(clone) == str(exc)
    assert clone.args == exc.args
    assert is_transient(clone) == is_transient(exc)


def test_pickling_keeps_attempts_set_after_construction() -> None:
    exc = TransientError("timed out", path="prds/slow.md")
    exc.attempts = 3  # the task sets this before giving up
    clone = pickle.loads(pickle.dumps(exc))
    assert clone.attempts == 3
    assert clone.path == "prds/slow.md"
