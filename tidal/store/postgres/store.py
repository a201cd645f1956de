"""``PostgresStore``: the Store on a Postgres URL, each method one statement or one transaction
over the tables its parts keep (``documents``, ``ledger``, ``claims``, ``embedding_cache``,
``vector_index``).

Each file's chunks are replaced in one transaction, under a per-path advisory lock, so a
reader sees the old chunk set or the new one, never none, part or a mix; and the file table
row is written in that same transaction, so "ingested" is recorded only with its chunks.
Every call that is safe to repeat rides out an outage (``riding_out``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from tidal.errors import ClaimLost
from tidal.records import Document, EmbeddedChunk, RunRecord, SourceFile, Vector
from tidal.retrying import OUTAGE_SECONDS, Service
from tidal.store import RRF_K, FailedFile, SearchHit
from tidal.store.postgres import documents, embedding_cache, ledger, vector_index
from tidal.store.postgres.claims import PRESENCE_PING_SECONDS, Claims
from tidal.store.postgres.connection import connection_errors, open_pool, ping, riding_out
from tidal.store.postgres.schema import ensure_schema
from tidal.store.postgres.vector_index import BIG_WRITE_ROWS, INDEX_MEMORY_MB

log = logging.getLogger("tidal.store")


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
        index_memory_mb: int = INDEX_MEMORY_MB,
    ) -> None:
        """``source`` is the identity of the source whose files this store reads and writes
        (``supabase://<bucket>``, or a folder): its file operations see that source's files
        only. Searches see every source's."""
        self.dimension = dimension
        self.source = source
        self.big_write_rows = big_write_rows
        self.index_memory_mb = index_memory_mb
        self.service = Service(
            "Postgres", "TIDAL_DATABASE_URL", lambda: ping(url), outage_seconds=outage_seconds
        )
        self._claims = Claims(
            url,
            source=source,
            service=self.service,
            connect=self._conn,
            ping_seconds=presence_ping_seconds,
        )
        with connection_errors("connect to Postgres"):
            with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                ensure_schema(conn, dimension)
            self._pool = open_pool(url, pool_size)
        self.service.answered()  # it did: what fails from now on is an outage, ridden out

    @property
    def holder(self) -> uuid.UUID:
        """This store's name on its claims (a UUID)."""
        return self._claims.holder

    @contextmanager
    def _conn(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        with connection_errors(what), self._pool.connection() as conn:
            yield conn

    # --- the vectors: one transaction per file ------------------------------------------------

    @riding_out
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
        claimed = self._claims.holds(file.path)
        if len(chunks) >= self.big_write_rows:
            self._make_room_for(len(chunks))
        with self._conn("write chunks") as conn, conn.transaction():
            conn.execute(
                "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"{self.source}\x1f{file.path}" if self.source else file.path,),
            )
            if claimed and not self._claims.end(conn, [file.path]):
                raise ClaimLost(
                    "another run took the file over while this one was away from Postgres;"
                    " nothing was written",
                    path=file.path,
                )
            embedding_cache.taken(conn, [e.chunk.hash for e in chunks], embedder)
            documents.replace_chunks(conn, self.source, file, document, chunks, embedder)
            ledger.mark_ingested(
                conn,
                self.source,
                file,
                fingerprint=fingerprint,
                chunks=len(chunks),
                tokens=sum(e.chunk.token_count for e in chunks),
                attempts=attempts,
            )
        if claimed:
            self._claims.ended(file.path)  # the write removed the claim's row with it

    @riding_out
    def delete_files(self, paths: Sequence[str]) -> int:
        """Remove files' chunks and records in one transaction; returns the chunks deleted."""
        if not paths:
            return 0
        with self._conn("delete files") as conn, conn.transaction():
            deleted = documents.delete_chunks(conn, self.source, paths)
            ledger.forget(conn, self.source, paths)
        return deleted

    @riding_out
    def search(
        self,
        embedding: Sequence[float],
        *,
        limit: int = 5,
        filter: dict[str, Any] | None = None,
        path_prefix: str | None = None,
    ) -> list[SearchHit]:
        with self._conn("search") as conn:
            return documents.search(
                conn, embedding, limit=limit, filter=filter, path_prefix=path_prefix
            )

    @riding_out
    def hybrid_search(
        self,
        query: str,
        embedding: Sequence[float] | None,
        *,
        limit: int = 5,
        filter: dict[str, Any] | None = None,
        path_prefix: str | None = None,
        full_text_weight: float = 1.0,
        semantic_weight: float = 1.0,
        rrf_k: int = RRF_K,
    ) -> list[SearchHit]:
        with self._conn("search") as conn:
            return documents.hybrid_search(
                conn,
                query,
                embedding,
                limit=limit,
                filter=filter,
                path_prefix=path_prefix,
                full_text_weight=full_text_weight,
                semantic_weight=semantic_weight,
                rrf_k=rrf_k,
            )

    # --- the ledger ---------------------------------------------------------------------------

    @riding_out
    def current_files(self, fingerprint: str, paths: Sequence[str] | None = None) -> dict[str, str]:
        with self._conn("read the file table") as conn:
            return ledger.current_files(conn, self.source, fingerprint, paths)

    @riding_out
    def stored_paths(self) -> set[str]:
        """Every path of this source the index knows, ingested or failed."""
        with self._conn("read the file table") as conn:
            return ledger.stored_paths(conn, self.source)

    @riding_out
    def failed_files(self) -> list[FailedFile]:
        with self._conn("read the file table") as conn:
            return ledger.select_failed(conn, self.source)

    @riding_out
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
        with self._conn("record a failure") as conn:
            ledger.mark_failed(
                conn,
                self.source,
                path,
                content_hash,
                fingerprint=fingerprint,
                error=error,
                kind=kind,
                attempts=attempts,
            )

    @riding_out
    def record_run(self, record: RunRecord) -> None:
        with self._conn("record the run") as conn:
            ledger.insert_run(conn, record)

    @riding_out
    def adopt(self, paths: Sequence[str]) -> int:
        """Make this source's the files among ``paths`` that an index made before files knew
        their source holds with no source; how many. The schema's migration adopts them all at
        once when the ledger names one source; otherwise each source adopts what it lists, so
        a run never deletes a file another source may own."""
        if not self.source or not paths:
            return 0
        with self._conn("adopt files") as conn, conn.transaction():
            adopted = ledger.adopt(conn, self.source, paths)
            if adopted is None:
                return 0
            documents.adopt_chunks(conn, self.source, paths)
        if adopted:
            log.info("%d file(s) of this index's first source adopted by %s", adopted, self.source)
        return adopted

    # --- claims -------------------------------------------------------------------------------

    def claim(self, path: str) -> AbstractContextManager[None]:
        """Hold ``path`` across threads, processes and machines until the block ends (see
        ``Claims.hold``); the file's write ends the claim with it."""
        return self._claims.hold(path)

    # --- bought vectors -----------------------------------------------------------------------

    @riding_out
    def cached_embeddings(self, hashes: Sequence[str], embedder: str) -> dict[str, Vector]:
        """Stored vectors for chunk texts already embedded by ``embedder``, by chunk hash."""
        if not hashes:
            return {}
        with self._conn("read cached embeddings") as conn:
            return embedding_cache.cached(conn, hashes, embedder)

    @riding_out
    def keep_embeddings(self, vectors: dict[str, Vector], embedder: str) -> None:
        if not vectors:
            return
        with self._conn("keep bought embeddings") as conn:
            embedding_cache.keep(conn, vectors, embedder)

    @riding_out
    def forget_kept_embeddings(self, older_than_days: float) -> int:
        with self._conn("clean the embedding cache") as conn:
            return embedding_cache.forget_kept(conn, older_than_days)

    # --- the vector index ---------------------------------------------------------------------

    @riding_out
    def suspend_vector_index(self) -> None:
        """Drop the HNSW index for a bulk load (``vector_index.drop``); searches meanwhile scan:
        exact, only slower."""
        with self._conn("drop the vector index") as conn:
            vector_index.drop(conn)

    @riding_out
    def build_vector_index(self) -> None:
        """Create the HNSW index if it is missing (``vector_index.build``)."""
        with self._conn("build the vector index") as conn:
            vector_index.build(conn, self.dimension, memory_mb=self.index_memory_mb)

    @riding_out
    def _make_room_for(self, rows: int) -> None:
        """Drop the vector index before a write so large that rebuilding the whole index after
        it is cheaper than inserting its rows into the live graph; the run rebuilds it at its
        end."""
        with self._conn("size the vector index") as conn:
            if not vector_index.worth_dropping(conn, rows):
                return
        log.info(
            "writing %d chunks: the vector index is dropped and rebuilt once at the end of the "
            "run, cheaper than inserting them into it (searches scan meanwhile)",
            rows,
        )
        self.suspend_vector_index()

    def close(self) -> None:
        try:
            self._claims.close()
        finally:
            self._pool.close()
