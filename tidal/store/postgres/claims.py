"""Claims: which store is working on which file, across threads, processes and machines.

A file in flight holds no connection while it waits for its embeddings: its claim is a row in
``file_claims`` naming the store that holds it, and a store is alive while its one presence
connection holds its presence lock (``Presence``). So the pool serves statements, not files
(its size need not grow with the files in flight), and a killed worker's files are free the
moment Postgres sees its connection drop.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from tidal.errors import TidalError, TransientError
from tidal.retrying import Service
from tidal.store.postgres.connection import connection_errors, riding_out

log = logging.getLogger("tidal.store")

CLAIM_FIRST_WAIT = 0.05
CLAIM_LONGEST_WAIT = 1.0
"""Seconds between tries for a file another live store holds, doubling from the first to the
longest: a second run waiting on a file another is writing notices within a second."""
PRESENCE_PING_SECONDS = 2.0
"""How often a store checks its presence connection, re-opening it if Postgres dropped it, and
retries releases that failed. Until it is back, other stores may take this one's files over;
its writes then find their claims gone and start over (``ClaimLost``), never writing twice."""
PRESENCE_SEED = 2
"""The seed of ``hashtextextended`` for presence locks (0 keys a file's write lock)."""

TAKE_CLAIM_SQL = f"""
    insert into file_claims as c (source, path, holder) values (%(source)s, %(path)s, %(holder)s)
    on conflict (source, path) do update set holder = excluded.holder, claimed_at = now()
        where c.holder = excluded.holder
            or pg_try_advisory_xact_lock(hashtextextended(c.holder::text, {PRESENCE_SEED}))
    returning c.holder
"""
"""Claim a path, or take it over from a holder that is gone: its presence lock can be taken
(for this statement only). A row of a live holder is left alone and nothing is returned."""

Connect = Callable[[str], AbstractContextManager[psycopg.Connection[Any]]]
"""A pooled connection, given what it is for (error messages name it)."""


class Claims:
    """One store's claims on the files of its ``source``."""

    def __init__(
        self, url: str, *, source: str, service: Service, connect: Connect, ping_seconds: float
    ) -> None:
        self.source = source
        self.service = service
        self._connect = connect
        self.holder = uuid.uuid4()
        """This store's name on its claims; alive while its presence holds its lock."""
        self._presence = Presence(url, self.holder, ping_seconds, self._release_pending)
        self._held: dict[str, bool] = {}
        """Paths this store's threads hold → whether the path's ``file_claims`` row may still
        be there (False once the file's write removed it)."""
        self._held_changed = threading.Condition()
        self._unreleased: set[str] = set()
        """Claims whose release failed (Postgres away): the presence keeper retries them."""

    @contextmanager
    def hold(self, path: str) -> Iterator[None]:
        """Hold ``path`` for this thread until the block ends; wait while another holds it.

        Threads of this store wait on each other in memory; other stores (runs, workers,
        machines) through the path's ``file_claims`` row. The row names this store, and holds
        only while this store is alive: a row whose holder's presence lock is free belongs to
        a store that is gone (killed, even with SIGKILL), and the next claim takes it over at
        once. No connection is held while the block runs. The file's write removes the row in
        its own transaction (``end``), and refuses to write when the row is no longer this
        store's.
        """
        with self._held_changed:
            while path in self._held:
                self._held_changed.wait()
            self._held[path] = True
            self._unreleased.discard(path)  # the claim takes the row over again
        try:
            self._be_present()
            delay = CLAIM_FIRST_WAIT
            while not self._take(path):
                time.sleep(delay)
                delay = min(delay * 2, CLAIM_LONGEST_WAIT)
            yield
        finally:
            try:
                if self._held[path]:
                    self._release(path)
            finally:
                with self._held_changed:
                    del self._held[path]
                    self._held_changed.notify_all()

    def holds(self, path: str) -> bool:
        """Whether a thread of this store holds ``path``."""
        return path in self._held

    def end(self, conn: psycopg.Connection[Any], paths: Sequence[str]) -> int:
        """Remove this store's claim rows on ``paths`` (in ``conn``'s transaction, if one is
        open); how many there were. A row that is another's stays (a store that thought this
        one gone took the file over)."""
        return conn.execute(
            "delete from file_claims where source = %s and path = any(%s) and holder = %s",
            (self.source, list(paths), self.holder),
        ).rowcount

    def ended(self, path: str) -> None:
        """Note that the file's write removed its claim's row: the claim ends with no release."""
        with self._held_changed:
            self._held[path] = False

    def close(self) -> None:
        self._presence.close()

    @riding_out
    def _be_present(self) -> None:
        self._presence.ensure()

    @riding_out
    def _take(self, path: str) -> bool:
        with self._connect("claim a file") as conn:
            taken = conn.execute(
                TAKE_CLAIM_SQL, {"source": self.source, "path": path, "holder": self.holder}
            ).fetchone()
        return taken is not None

    def _release(self, path: str) -> None:
        """End a claim that wrote nothing; left to the presence keeper if Postgres is away."""
        try:
            with self._connect("release a file") as conn:
                self.end(conn, [path])
        except TransientError as exc:
            log.warning("could not release %r (%s); retrying in the background", path, exc.message)
            with self._held_changed:
                self._unreleased.add(path)

    def _release_pending(self) -> None:
        with self._held_changed:
            pending = sorted(self._unreleased - set(self._held))
        if not pending:
            return
        with self._connect("release files") as conn:
            self.end(conn, pending)
        with self._held_changed:
            self._unreleased.difference_update(pending)


class Presence:
    """A store's liveness, as every other store sees it: one connection holding a
    transaction-level advisory lock keyed by the store's id, in a transaction left open (it
    writes nothing, so it holds back no vacuum).

    A transaction-level lock works through Supabase's transaction pooler, where session locks
    do not, and it goes with its connection: when the process dies, Postgres frees it, and
    the store's claims with it. A keeper thread pings it every ``ping_seconds`` and re-opens it
    after Postgres dropped it (a restart, a failover), then runs ``on_ping``.
    """

    def __init__(
        self, url: str, holder: uuid.UUID, ping_seconds: float, on_ping: Callable[[], None]
    ) -> None:
        self._url = url
        self._holder = holder
        self._ping_seconds = ping_seconds
        self._on_ping = on_ping
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._keeper: threading.Thread | None = None

    def ensure(self) -> None:
        """Be present before a claim; opened on the first claim (a store that only reads
        never opens it). Raises TransientError while Postgres is away."""
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                return
            self._open()
            if self._keeper is None:
                self._keeper = threading.Thread(
                    target=self._keep, name="tidal-presence", daemon=True
                )
                self._keeper.start()

    def _open(self) -> None:
        with connection_errors("open the store's presence connection"):
            conn = psycopg.connect(self._url, prepare_threshold=None, connect_timeout=10)
            try:
                [present] = conn.execute(
                    f"select pg_try_advisory_xact_lock(hashtextextended(%s, {PRESENCE_SEED}))",
                    (str(self._holder),),
                ).fetchone()
            except BaseException:
                conn.close()
                raise
        if not present:
            # The old connection's backend has not noticed it is gone yet: until it does, the
            # store's claims stand, and the next ping tries again.
            conn.close()
            raise TransientError("the store's previous presence connection is still open")
        self._conn = conn

    def _keep(self) -> None:
        while not self._closed.wait(self._ping_seconds):
            try:
                # Pinged outside the lock (only this thread uses the connection), so a ping
                # stuck on a dead network never holds up a claim's ``ensure``.
                conn = self._conn
                if conn is not None and not conn.closed:
                    try:
                        conn.execute("select 1")
                    except psycopg.Error:
                        conn.close()
                with self._lock:
                    if self._closed.is_set():
                        return
                    if self._conn is None or self._conn.closed:
                        self._open()
                        log.info("the store's presence connection is back")
                self._on_ping()
            except TidalError as exc:
                log.debug("presence keeper: %s", exc.message)
            except Exception:  # noqa: BLE001 - the keeper must outlive any one failure
                log.exception("presence keeper")

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self._keeper is not None:
            self._keeper.join(timeout=5)
