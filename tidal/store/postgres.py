"""Postgres with pgvector, through psycopg 3: the embedded default, Supabase, or any other.

Each file's chunks are replaced in one transaction, under a per-path advisory lock, so a
reader sees the old chunk set or the new one, never none, part or a mix; and the file table
row is written in that same transaction, so "ingested" is recorded only with its chunks.

A file in flight holds no connection while it waits for its embeddings: its claim is a row in
``file_claims`` naming the store that holds it, and a store is alive while its one presence
connection holds its presence lock (see ``_Presence``). So the pool serves statements, not
files (``pool_size`` need not grow with the files in flight), and a killed worker's files are
still free the moment Postgres sees its connection drop.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from tidal.errors import ClaimLost, ConfigError, TidalError, TransientError, Unavailable
from tidal.records import Document, EmbeddedChunk, RunRecord, SourceFile, Vector
from tidal.retrying import OUTAGE_SECONDS, Policy, Service
from tidal.store import FailedFile, IndexStatus, SearchHit

log = logging.getLogger("tidal.store")
P = ParamSpec("P")
R = TypeVar("R")

_ID_NAMESPACE = uuid.UUID("5b0c1f55-7a1d-4c3e-9a4e-746964616c00")
_SCHEMA_LOCK = 0x7469_6461_6C  # "tidal": serialises concurrent schema set-up
_INDEX_LOCK = _SCHEMA_LOCK + 1  # serialises builds of the vector index by runs ending together


WRITE_BATCH = 500
"""Rows sent per ``executemany`` when a file's chunks are written: their parameters are built
batch by batch, so a 10,000-chunk file never holds a second copy of all its rows at once."""


def chunk_id(path: str, index: int, hash_: str, source: str = "") -> uuid.UUID:
    """Deterministic row id: the same chunk of the same file always gets the same id."""
    name = f"{path}\x00{index}\x00{hash_}"
    return uuid.uuid5(_ID_NAMESPACE, f"{source}\x00{name}" if source else name)


VECTOR_INDEX_SQL = (
    "create index if not exists documents_embedding_idx\n"
    "    on documents using hnsw (embedding vector_cosine_ops);\n"
)
"""The HNSW index, as schema.sql writes it: the one statement a store's set-up leaves out."""
INDEX_MEMORY_CAP_MB = 512
"""The most ``maintenance_work_mem`` an index build asks for (see ``build_vector_index``): the
graph of ~60,000 1536-dimension rows. Past it pgvector goes on building on disk, slower but
safe on a small managed instance, where a larger ask could exhaust the server's memory."""


def schema_sql(dimension: int, *, vector_index: bool = True) -> str:
    """schema.sql for ``dimension``-wide vectors; ``vector_index=False`` leaves the HNSW index
    to the run (``build_vector_index``), so opening a store never builds or rebuilds it."""
    text = resources.files("tidal.store").joinpath("schema.sql").read_text("utf-8")
    if not vector_index:
        assert VECTOR_INDEX_SQL in text, "schema.sql and VECTOR_INDEX_SQL disagree"
        text = text.replace(VECTOR_INDEX_SQL, "")
    return text.replace("__DIMENSION__", str(int(dimension)))


CLAIM_FIRST_WAIT = 0.05
CLAIM_LONGEST_WAIT = 1.0
"""Seconds between tries for a file another live store holds, doubling from the first to the
longest: a second run waiting on a file another is writing notices within a second."""
PRESENCE_PING_SECONDS = 2.0
"""How often a store checks its presence connection, re-opening it if Postgres dropped it, and
retries releases that failed. Until it is back, other stores may take this one's files over;
its writes then find their claims gone and start over (``ClaimLost``), never writing twice."""
_PRESENCE_SEED = 2
"""The seed of ``hashtextextended`` for presence locks (0 keys a file's write lock)."""

TAKE_CLAIM_SQL = f"""
    insert into file_claims as c (source, path, holder) values (%(source)s, %(path)s, %(holder)s)
    on conflict (source, path) do update set holder = excluded.holder, claimed_at = now()
        where c.holder = excluded.holder
            or pg_try_advisory_xact_lock(hashtextextended(c.holder::text, {_PRESENCE_SEED}))
    returning c.holder
"""
"""Claim a path, or take it over from a holder that is gone: its presence lock can be taken
(for this statement only). A row of a live holder is left alone and nothing is returned."""

BIG_WRITE_ROWS = 2_000
"""A file writing at least this many chunks, and at least an eighth of the rows the vector
index holds, drops the index for its write; the run builds it once at its end."""
LIVE_INDEX_COST = 8
"""Rows of a build that one live HNSW insert costs, counted low to leave room for the build's
own overhead (``bench/inserts.py`` measures the real figure): past ``rows_kept /
LIVE_INDEX_COST`` new rows, rebuilding the whole index is cheaper than keeping it up."""

FRESH_CONNECTION_SECONDS = 2.0
"""A pooled connection returned this recently is handed out without a check."""


STATEMENTS = Policy(attempts=5, first_delay=0.1, max_delay=2.0, total=20.0)
"""Quick tries of a statement whose connection broke while Postgres itself answers."""


def _riding_out(method: Callable[P, R]) -> Callable[P, R]:
    """An idempotent call through the store's ``Service``: a restart, a failover or a pooler
    hiccup costs the run a pause, not its files; down past TIDAL_OUTAGE_SECONDS is ServiceDown,
    which stops the run with its summary."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store = args[0]
        assert isinstance(store, PostgresStore)
        return store.service.call(
            lambda: method(*args, **kwargs), what=method.__name__, policy=STATEMENTS
        )

    return wrapper


class PostgresStore:
    """The Store on a Postgres URL; creates its schema for ``dimension``-wide vectors."""

    def __init__(
        self,
        url: str,
        *,
        dimension: int,
        pool_size: int = 4,
        outage_seconds: float = OUTAGE_SECONDS,
        presence_ping_seconds: float = PRESENCE_PING_SECONDS,
        big_write_rows: int = BIG_WRITE_ROWS,
        source: str = "",
    ) -> None:
        """``source`` is the identity of the source whose files this store reads and writes
        (``supabase://<bucket>``, or a folder): its file operations see that source's files
        only. Searches see every source's."""
        self.dimension = dimension
        self.source = source
        self.big_write_rows = big_write_rows
        self._url = url
        self.service = Service(
            "Postgres", "TIDAL_DATABASE_URL", self._ping, outage_seconds=outage_seconds
        )
        self.holder = uuid.uuid4()
        """This store's name on its claims; alive while ``_presence`` holds its lock."""
        self._presence = _Presence(url, self.holder, presence_ping_seconds, self._release_pending)
        self._held: dict[str, bool] = {}
        """Paths this store's threads hold → whether the path's ``file_claims`` row may still
        be there (False once the file's write removed it)."""
        self._held_changed = threading.Condition()
        self._unreleased: set[str] = set()
        """Claims whose release failed (Postgres away): the presence keeper retries them."""
        with _connection_errors("connect to Postgres"):
            with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                ensure_schema(conn, dimension)
            self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
                weakref.WeakKeyDictionary()
            )
            self._pool = ConnectionPool(
                url,
                # No connection kept open for its own sake: a pool with a minimum reconnects in
                # the background with a growing backoff, and was measured still failing 18 s
                # after Postgres came back; with none, the next call connects at once. A
                # connection that sat idle is checked on checkout (``_check_if_idle``), so one
                # broken by a restart is replaced.
                min_size=0,
                max_size=max(pool_size, 1),
                check=self._check_if_idle,
                reset=self._mark_returned,
                configure=register_vector,
                # Supabase's transaction pooler (Supavisor, port 6543) cannot keep prepared
                # statements between transactions; the few ms they save are not worth it.
                # Autocommit: a statement on its own is its own transaction, with no COMMIT
                # round trip after it; what must be atomic says so (``conn.transaction()``).
                kwargs={"prepare_threshold": None, "autocommit": True},
                open=True,
                timeout=15,
                name="tidal",
            )
        self.service.answered()  # it did: what fails from now on is an outage, ridden out

    def _ping(self) -> None:
        """The outage probe: a new connection and one round trip."""
        with (
            _connection_errors("connect to Postgres"),
            psycopg.connect(self._url, connect_timeout=5, autocommit=True) as conn,
        ):
            conn.execute("select 1")

    def _mark_returned(self, conn: psycopg.Connection[Any]) -> None:
        self._returned[conn] = time.monotonic()

    def _check_if_idle(self, conn: psycopg.Connection[Any]) -> None:
        """Check a connection that sat in the pool, with a round trip; hand out one returned
        moments ago as it is. Checking every checkout, with a COMMIT after each lone
        statement, cost a file ~12 round trips (``bench/remote_db.py``, Postgres 20 ms away:
        0.92 s a file against 0.68 s). One broken in those moments fails its statement, which
        ``_riding_out`` runs again on another."""
        if time.monotonic() - self._returned.get(conn, 0.0) > FRESH_CONNECTION_SECONDS:
            ConnectionPool.check_connection(conn)

    @contextmanager
    def _conn(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        with _connection_errors(what), self._pool.connection() as conn:
            yield conn

    @_riding_out
    def current_files(self, fingerprint: str, paths: Sequence[str] | None = None) -> dict[str, str]:
        query = (
            "select path, content_hash from ingested_files"
            " where source = %s and status = 'ingested' and fingerprint = %s"
        )
        params: tuple[Any, ...] = (self.source, fingerprint)
        if paths is not None:
            query += " and path = any(%s)"
            params += (list(paths),)
        with self._conn("read the file table") as conn:
            rows = conn.execute(query, params).fetchall()
        return {path: content_hash for path, content_hash in rows}

    @_riding_out
    def replace_file(
        self,
        file: SourceFile,
        document: Document,
        chunks: Sequence[EmbeddedChunk],
        *,
        fingerprint: str,
        embedder: str,
        attempts: int = 1,
    ) -> None:
        tokens = sum(e.chunk.token_count for e in chunks)
        claimed = file.path in self._held
        if len(chunks) >= self.big_write_rows:
            self._make_room_for(len(chunks))
        with self._conn("write chunks") as conn, conn.transaction():
            conn.execute(
                "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"{self.source}\x1f{file.path}" if self.source else file.path,),
            )
            if claimed and not self._end_claims(conn, [file.path]):
                raise ClaimLost(
                    "another run took the file over while this one was away from Postgres;"
                    " nothing was written",
                    path=file.path,
                )
            conn.execute(
                "delete from documents where source = %s and source_path = %s",
                (self.source, file.path),
            )
            conn.execute(
                "delete from embedding_cache where embedder = %s and chunk_hash = any(%s)",
                (embedder, [e.chunk.hash for e in chunks]),
            )
            with conn.cursor() as cur:
                for start in range(0, len(chunks), WRITE_BATCH):
                    cur.executemany(
                        "insert into documents (id, content, metadata, embedding,"
                        " source_path, chunk_index, chunk_hash, embedder, source)"
                        " values (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)",
                        _rows(
                            file,
                            document,
                            chunks[start : start + WRITE_BATCH],
                            embedder,
                            self.source,
                        ),
                    )
            conn.execute(
                """
                insert into ingested_files as f (source, path, content_hash, fingerprint,
                    chunk_count, token_count, status, error, error_kind, attempts)
                values (%s, %s, %s, %s, %s, %s, 'ingested', null, null, %s)
                on conflict (source, path) do update set
                    content_hash = excluded.content_hash, fingerprint = excluded.fingerprint,
                    chunk_count = excluded.chunk_count, token_count = excluded.token_count,
                    status = 'ingested', error = null, error_kind = null,
                    attempts = excluded.attempts, updated_at = now()
                """,
                (
                    self.source,
                    file.path,
                    file.content_hash,
                    fingerprint,
                    len(chunks),
                    tokens,
                    attempts,
                ),
            )
        if claimed:
            with self._held_changed:
                self._held[file.path] = False  # the write removed the claim's row with it

    @_riding_out
    def forget_kept_embeddings(self, older_than_days: float) -> int:
        with self._conn("clean the embedding cache") as conn:
            deleted = conn.execute(
                "delete from embedding_cache where created_at < now() - make_interval(secs => %s)",
                (older_than_days * 86400,),
            ).rowcount
        return deleted

    @_riding_out
    def record_run(self, record: RunRecord) -> None:
        row = {**asdict(record), "counts": Jsonb(record.counts)}
        with self._conn("record the run") as conn:
            conn.execute(
                f"insert into ingest_runs ({', '.join(row)})"
                f" values ({', '.join(f'%({k})s' for k in row)})",
                row,
            )

    @_riding_out
    def _make_room_for(self, rows: int) -> None:
        """Drop the vector index before a write so large that rebuilding the whole index after
        it is cheaper than inserting its rows into the live graph, which would also hold the
        write's transaction, and its locks, open for as long. The run rebuilds it at its end."""
        with self._conn("size the vector index") as conn:
            # Exact: the catalogue's estimate is -1 until a vacuum for an index filled live.
            (indexed,) = conn.execute(
                "select case when to_regclass('documents_embedding_idx') is null then null"
                " else (select count(*) from documents) end"
            ).fetchone()
        if indexed is None or rows * LIVE_INDEX_COST < indexed:
            return
        log.info(
            "writing %d chunks: the vector index is dropped and rebuilt once at the end of the "
            "run, cheaper than inserting them into it (searches scan meanwhile)",
            rows,
        )
        self.suspend_vector_index()

    @_riding_out
    def suspend_vector_index(self) -> None:
        """Drop the HNSW index for a bulk load. Rows then cost ~1 ms to write instead of ~11
        (bench/inserts.py: 4,000 rows of 1536 dims), and ``build_vector_index`` puts the index
        back in one pass, ~13x cheaper than keeping it up row by row. Searches meanwhile scan:
        exact, only slower."""
        with self._conn("drop the vector index") as conn:
            conn.execute("drop index if exists documents_embedding_idx")

    @_riding_out
    def build_vector_index(self) -> None:
        """Create the HNSW index if it is missing (after a bulk load, or a run that crashed in
        one), with enough ``maintenance_work_mem`` for the graph to be built in memory: past
        it, pgvector goes on building on disk at the row-by-row price.

        Runs that end together would both find the index missing, and ``if not exists`` does
        not cover that: the later catalogue insert fails on its unique key. So builds take a
        lock of their own (not the schema's, which would hold up stores opening for the whole
        build), and the later run finds the index there."""
        with self._conn("build the vector index") as conn, conn.transaction():
            (free,) = conn.execute(
                "select pg_try_advisory_xact_lock(%s)", (_INDEX_LOCK,)
            ).fetchone()
            if not free:
                log.info("waiting for another run's build of the vector index")
                conn.execute("select pg_advisory_xact_lock(%s)", (_INDEX_LOCK,))
            if conn.execute("select to_regclass('documents_embedding_idx')").fetchone() != (None,):
                return
            rows = conn.execute("select count(*) from documents").fetchone()[0]
            started = time.perf_counter()
            needed_mb = int(rows * (self.dimension * 4 + 512) * 1.3 / 2**20) + 64
            current_mb = conn.execute(
                "select setting::bigint / 1024 from pg_settings where name = 'maintenance_work_mem'"
            ).fetchone()[0]  # the setting is in kB
            if needed_mb > current_mb:
                conn.execute(
                    f"set local maintenance_work_mem = '{min(needed_mb, INDEX_MEMORY_CAP_MB)}MB'"
                )
            conn.execute(VECTOR_INDEX_SQL)
        log.info(
            "built the vector index over %d chunks in %.1f s", rows, time.perf_counter() - started
        )

    @contextmanager
    def claim(self, path: str) -> Iterator[None]:
        """Hold ``path`` for this thread until the block ends; wait while another holds it.

        Threads of this store wait on each other in memory; other stores (runs, workers,
        machines) through the path's ``file_claims`` row. The row names this store, and holds
        only while this store is alive: a row whose holder's presence lock is free belongs to
        a store that is gone (killed, even with SIGKILL), and the next claim takes it over at
        once. No connection is held while the block runs, so files in flight are not bounded
        by connections. The file's write (``replace_file``) removes the row in its own
        transaction, and refuses to write when the row is no longer this store's.
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

    @_riding_out
    def _be_present(self) -> None:
        self._presence.ensure()

    @_riding_out
    def _take(self, path: str) -> bool:
        with self._conn("claim a file") as conn:
            taken = conn.execute(
                TAKE_CLAIM_SQL, {"source": self.source, "path": path, "holder": self.holder}
            ).fetchone()
        return taken is not None

    def _end_claims(self, conn: psycopg.Connection[Any], paths: Sequence[str]) -> int:
        """Remove this store's claim rows on ``paths`` (in ``conn``'s transaction, if one is
        open); how many there were. A row that is another's stays (a store that thought this
        one gone took the file over)."""
        return conn.execute(
            "delete from file_claims where source = %s and path = any(%s) and holder = %s",
            (self.source, list(paths), self.holder),
        ).rowcount

    def _release(self, path: str) -> None:
        """End a claim that wrote nothing; left to the presence keeper if Postgres is away."""
        try:
            with self._conn("release a file") as conn:
                self._end_claims(conn, [path])
        except TransientError as exc:
            log.warning("could not release %r (%s); retrying in the background", path, exc.message)
            with self._held_changed:
                self._unreleased.add(path)

    def _release_pending(self) -> None:
        with self._held_changed:
            pending = sorted(self._unreleased - set(self._held))
        if not pending:
            return
        with self._conn("release files") as conn:
            self._end_claims(conn, pending)
        with self._held_changed:
            self._unreleased.difference_update(pending)

    @_riding_out
    def cached_embeddings(self, hashes: Sequence[str], embedder: str) -> dict[str, Vector]:
        """Stored vectors for chunk texts already embedded by ``embedder``, by chunk hash."""
        if not hashes:
            return {}
        with self._conn("read cached embeddings") as conn:
            rows = conn.execute(
                "select chunk_hash, embedding from embedding_cache"
                " where chunk_hash = any(%s) and embedder = %s"
                " union all"
                " (select distinct on (chunk_hash) chunk_hash, embedding from documents"
                " where chunk_hash = any(%s) and embedder = %s)",
                (list(hashes), embedder, list(hashes), embedder),
            ).fetchall()
        # pgvector-python < 0.4 (which langchain-postgres pins) loads a float32 array itself;
        # 0.4 and later load a Vector.
        return {
            hash_: vector.to_numpy() if hasattr(vector, "to_numpy") else vector
            for hash_, vector in rows
        }

    @_riding_out
    def keep_embeddings(self, vectors: dict[str, Vector], embedder: str) -> None:
        if not vectors:
            return
        rows = [
            (hash_, embedder, np.asarray(vector, dtype=np.float32))
            for hash_, vector in vectors.items()
        ]
        # One transaction, not a commit (and its flush) per row.
        with self._conn("keep bought embeddings") as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "insert into embedding_cache (chunk_hash, embedder, embedding)"
                " values (%s, %s, %s) on conflict do nothing",
                rows,
            )

    @_riding_out
    def stored_paths(self) -> set[str]:
        """Every path of this source the index knows, ingested or failed."""
        with self._conn("read the file table") as conn:
            rows = conn.execute("select path from ingested_files where source = %s", (self.source,))
            return {row[0] for row in rows}

    @_riding_out
    def adopt(self, paths: Sequence[str]) -> int:
        """Make this source's the files among ``paths`` that an index made before files knew
        their source holds with no source; how many. The schema's migration adopts them all at
        once when the ledger names one source; otherwise each source adopts what it lists, so
        a run never deletes a file another source may own."""
        if not self.source or not paths:
            return 0
        with self._conn("adopt files") as conn, conn.transaction():
            legacy = conn.execute(
                "select exists (select 1 from ingested_files where source = '')"
            ).fetchone()
            if legacy == (False,):
                return 0
            adopted = conn.execute(
                "update ingested_files set source = %s where source = '' and path = any(%s)"
                " and not exists (select 1 from ingested_files o"
                " where o.source = %s and o.path = ingested_files.path)",
                (self.source, list(paths), self.source),
            ).rowcount
            conn.execute(
                "update documents set source = %s where source = '' and source_path = any(%s)"
                " and not exists (select 1 from documents o"
                " where o.source = %s and o.source_path = documents.source_path)",
                (self.source, list(paths), self.source),
            )
        if adopted:
            log.info("%d file(s) of this index's first source adopted by %s", adopted, self.source)
        return adopted

    @_riding_out
    def failed_files(self) -> list[FailedFile]:
        with self._conn("read the file table") as conn:
            return _failed_files(conn, self.source)

    @_riding_out
    def delete_files(self, paths: Sequence[str]) -> int:
        """Remove files' chunks and records in one transaction; returns the chunks deleted."""
        if not paths:
            return 0
        with self._conn("delete files") as conn, conn.transaction():
            deleted = conn.execute(
                "delete from documents where source = %s and source_path = any(%s)",
                (self.source, list(paths)),
            ).rowcount
            conn.execute(
                "delete from ingested_files where source = %s and path = any(%s)",
                (self.source, list(paths)),
            )
        return deleted

    @_riding_out
    def record_failure(
        self,
        path: str,
        content_hash: str,
        *,
        fingerprint: str,
        error: str,
        kind: str,
        attempts: int,
    ) -> None:
        with self._conn("record a failure") as conn, conn.transaction():
            conn.execute(
                """
                insert into ingested_files as f (source, path, content_hash, fingerprint,
                    status, error, error_kind, attempts)
                values (%s, %s, %s, %s, 'failed', %s, %s, %s)
                on conflict (source, path) do update set
                    content_hash = excluded.content_hash, fingerprint = excluded.fingerprint,
                    status = 'failed', error = excluded.error, error_kind = excluded.error_kind,
                    attempts = excluded.attempts, updated_at = now()
                """,
                (self.source, path, content_hash, fingerprint, error, kind, attempts),
            )

    @_riding_out
    def search(
        self, embedding: Sequence[float], *, limit: int = 5, filter: dict[str, Any] | None = None
    ) -> list[SearchHit]:
        with self._conn("search") as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select id, content, metadata, similarity from match_documents(%s, %s, %s::jsonb)",
                (np.asarray(embedding, dtype=np.float32), limit, json.dumps(filter or {})),
            )
            rows = cur.fetchall()
        return [
            SearchHit(
                source_path=row["metadata"].get("source_path", ""),
                chunk_index=int(row["metadata"].get("chunk_index", 0)),
                content=row["content"],
                score=float(row["similarity"]),
                metadata=row["metadata"],
            )
            for row in rows
        ]

    def close(self) -> None:
        try:
            self._presence.close()
        finally:
            self._pool.close()


class _Presence:
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
        with _connection_errors("open the store's presence connection"):
            conn = psycopg.connect(self._url, prepare_threshold=None, connect_timeout=10)
            try:
                [present] = conn.execute(
                    f"select pg_try_advisory_xact_lock(hashtextextended(%s, {_PRESENCE_SEED}))",
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


def failed_files(url: str) -> list[FailedFile]:
    """The failed files at ``url``, without setting up a store (no schema, no model)."""
    with _connection_errors("read the file table"), psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('ingested_files')").fetchone() == (None,):
            return []
        return _failed_files(conn)


def record_run(url: str, record: RunRecord) -> bool:
    """Write ``record`` to the ledger at ``url`` without setting up a store, if the index exists
    and Postgres answers within seconds; whether it was written. For a run that stopped before
    it could open its store (a refused key, a service down at start-up)."""
    row = {**asdict(record), "counts": Jsonb(record.counts)}
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            if conn.execute("select to_regclass('ingest_runs')").fetchone() == (None,):
                return False
            conn.execute(
                f"insert into ingest_runs ({', '.join(row)})"
                f" values ({', '.join(f'%({k})s' for k in row)})",
                row,
            )
    except psycopg.Error as exc:
        log.warning("could not record the stopped run in the ledger: %s", _first_line(exc))
        return False
    return True


def index_status(url: str) -> IndexStatus | None:
    """What the index at ``url`` holds and its last runs, without setting up a store (no
    schema, no model, no Prefect): ``tidal status``. None when Tidal never ran there."""
    with _connection_errors("read the index"), psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('ingest_runs')").fetchone() == (None,):
            return None
        files, failed, chunks = conn.execute(
            "select count(*) filter (where status = 'ingested'),"
            " count(*) filter (where status = 'failed'),"
            " coalesce(sum(chunk_count) filter (where status = 'ingested'), 0)"
            " from ingested_files"
        ).fetchone()
        with conn.cursor(row_factory=dict_row) as cur:
            columns = ", ".join(f.name for f in fields(RunRecord))
            last = cur.execute(
                f"select {columns} from ingest_runs order by finished_at desc, id desc limit 1"
            ).fetchone()
            success = cur.execute(
                f"select {columns} from ingest_runs where outcome = 'completed'"
                " order by finished_at desc, id desc limit 1"
            ).fetchone()
    last_run = RunRecord(**last) if last else None
    return IndexStatus(
        files=files,
        chunks=int(chunks),
        failed=failed,
        last_run=last_run,
        last_success=last_run if success == last else RunRecord(**success) if success else None,
    )


def _failed_files(conn: psycopg.Connection[Any], source: str | None = None) -> list[FailedFile]:
    """Failed files, of ``source`` only when given."""
    mine = "" if source is None else " and source = %(source)s"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select path, error, error_kind, attempts, updated_at, content_hash, fingerprint"
            f" from ingested_files where status = 'failed'{mine} order by updated_at desc, path",
            {"source": source},
        )
        return [FailedFile(**row) for row in cur.fetchall()]


def ensure_schema(conn: psycopg.Connection[Any], dimension: int) -> None:
    """Create what is missing; refuse a ``documents`` table built for another dimension.

    schema.sql's ``alter table`` statements take an exclusive lock on each table even when they
    change nothing, which waits for every statement in flight while new ones queue behind it.
    So the schema applied is marked with its digest (a comment on ``ingest_runs``), and a
    process opening a store on a schema that is already current reads the catalog only: a
    worker or a second run joining a busy index takes no table lock.
    """
    sql = schema_sql(dimension, vector_index=False)
    marker = f"tidal schema {hashlib.sha256(sql.encode()).hexdigest()[:16]}"
    with conn.transaction():
        if _schema_marker(conn) != marker:
            # Not current: serialise with other processes setting it up, and read the width
            # after the lock, so one that created the table meanwhile for another model is seen.
            conn.execute("select pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        existing = conn.execute(
            "select a.atttypmod from pg_attribute a"
            " where a.attrelid = to_regclass('documents') and a.attname = 'embedding'"
        ).fetchone()
        if existing is not None and existing[0] != dimension:
            raise ConfigError(
                f"the documents table holds {existing[0]}-dimension vectors but the embedder "
                f"makes {dimension}; point TIDAL_DATABASE_URL at another database, or drop "
                "the documents and ingested_files tables to re-index with this model"
            )
        if _schema_marker(conn) != marker:  # still not current once the lock is ours
            conn.execute(sql)
            conn.execute(f"comment on table ingest_runs is '{marker}'")


def _schema_marker(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("select obj_description(to_regclass('ingest_runs'), 'pg_class')").fetchone()
    return row[0] if row else None


@contextmanager
def _connection_errors(what: str) -> Iterator[None]:
    """Connection trouble is transient; anything else Postgres says is a bug or bad config."""
    try:
        yield
    except psycopg.OperationalError as exc:  # the connection, not the statement: maybe down
        raise Unavailable(f"could not {what}: {_first_line(exc)}") from exc
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
        # e.g. the server has no pgvector
        raise ConfigError(f"could not {what}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _rows(
    file: SourceFile,
    document: Document,
    chunks: Sequence[EmbeddedChunk],
    embedder: str,
    source: str,
) -> Iterator[tuple[Any, ...]]:
    """``documents`` rows for ``chunks``, made as the driver asks for them."""
    for e in chunks:
        metadata = {
            "source_path": file.path,
            "type": document.kind,
            "title": document.title,
            "chunk_index": e.chunk.index,
            "tokens": e.chunk.token_count,
        }
        if source:
            metadata["source"] = source  # a filter can pick one source: {"source": ...}
        yield (
            chunk_id(file.path, e.chunk.index, e.chunk.hash, source),
            e.chunk.text,
            json.dumps(metadata),
            np.asarray(e.embedding, dtype=np.float32),
            file.path,
            e.chunk.index,
            e.chunk.hash,
            embedder,
            source,
        )
