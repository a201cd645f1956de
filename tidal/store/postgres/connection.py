"""Connections to Postgres, and what their failures mean.

Connection trouble is an outage (``Unavailable``): the store's ``Service`` rides it out, so a
restart, a failover or a pooler hiccup costs the run a pause, not its files. A server that
lacks a feature (no pgvector) is bad configuration; anything else Postgres says is a bug.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from tidal.errors import ConfigError, Unavailable
from tidal.retrying import Policy, Service

P = ParamSpec("P")
R = TypeVar("R")

STATEMENTS = Policy(attempts=5, first_delay=0.1, max_delay=2.0, total=20.0)
"""Quick tries of a statement whose connection broke while Postgres itself answers."""

FRESH_CONNECTION_SECONDS = 2.0
"""A pooled connection returned this recently is handed out without a check."""

POOL_WAIT_SECONDS = 15.0
"""How long a call waits for a pool connection before it counts as Postgres not answering."""


class Served(Protocol):
    """What ``riding_out`` needs of the object whose method it wraps."""

    service: Service


S = TypeVar("S", bound=Served)


def riding_out(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """An idempotent call through its object's ``service``: down past TIDAL_OUTAGE_SECONDS is
    ServiceDown, which stops the run with its summary."""

    @functools.wraps(method)
    def wrapper(served: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return served.service.call(
            lambda: method(served, *args, **kwargs), what=method.__name__, policy=STATEMENTS
        )

    return wrapper


@contextmanager
def connection_errors(what: str) -> Iterator[None]:
    """Connection trouble is transient; anything else Postgres says is a bug or bad config."""
    try:
        yield
    except psycopg.OperationalError as exc:  # the connection, not the statement: maybe down
        raise Unavailable(f"could not {what}: {first_line(exc)}") from exc
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
        # e.g. the server has no pgvector
        raise ConfigError(f"could not {what}: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def ping(url: str) -> None:
    """The outage probe: a new connection and one round trip."""
    with (
        connection_errors("connect to Postgres"),
        psycopg.connect(url, connect_timeout=5, autocommit=True) as conn,
    ):
        conn.execute("select 1")


def open_pool(url: str, size: int) -> ConnectionPool:
    """A pool of autocommit connections with pgvector's types, checked only after sitting idle.

    A connection returned moments ago is handed out as it is: checking every checkout costs a
    round trip per statement, which a distant database makes dear (``bench/remote_db.py``). One
    broken in those moments fails its statement, which ``riding_out`` runs again on another.
    """
    returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
        weakref.WeakKeyDictionary()
    )

    def mark_returned(conn: psycopg.Connection[Any]) -> None:
        returned[conn] = time.monotonic()

    def check_if_idle(conn: psycopg.Connection[Any]) -> None:
        if time.monotonic() - returned.get(conn, 0.0) > FRESH_CONNECTION_SECONDS:
            ConnectionPool.check_connection(conn)

    return ConnectionPool(
        url,
        # No connection kept open for its own sake: a pool with a minimum reconnects in the
        # background with a growing backoff, so it can go on failing for a while after
        # Postgres is back; with none, the next call connects at once. A connection that sat
        # idle is checked on checkout, so one broken by a restart is replaced.
        min_size=0,
        max_size=max(size, 1),
        check=check_if_idle,
        reset=mark_returned,
        configure=register_vector,
        # Supabase's transaction pooler (Supavisor, port 6543) cannot keep prepared statements
        # between transactions; the few ms they save are not worth it. Autocommit: a statement
        # on its own is its own transaction, with no COMMIT round trip after it; what must be
        # atomic says so (``conn.transaction()``).
        kwargs={"prepare_threshold": None, "autocommit": True},
        open=True,
        timeout=POOL_WAIT_SECONDS,
        name="tidal",
    )
