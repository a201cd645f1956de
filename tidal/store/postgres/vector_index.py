"""The HNSW index over ``documents.embedding``: kept up row by row for small writes, dropped for
a write large enough that rebuilding it is cheaper, and built once at a run's end.

Opening a store never builds it (``schema_sql(vector_index=False)``): the run does, so a
process joining a busy index never waits on a build. While it is missing, searches scan:
exact, only slower.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from tidal.store.postgres.schema import SCHEMA_LOCK, VECTOR_INDEX_SQL

log = logging.getLogger("tidal.store")

INDEX_LOCK = SCHEMA_LOCK + 1
"""The advisory lock that serialises builds by runs ending together. Not the schema's, which
would hold up stores opening for the whole build."""

BIG_WRITE_ROWS = 2_000
"""A file writing at least this many chunks, and at least an eighth of the rows the vector
index holds, drops the index for its write; the run builds it once at its end."""
LIVE_INDEX_COST = 8
"""Rows of a build that one live HNSW insert costs, counted low to leave room for the build's
own overhead (``bench/inserts.py`` measures the real figure): past ``rows_kept /
LIVE_INDEX_COST`` new rows, rebuilding the whole index is cheaper than keeping it up."""
INDEX_MEMORY_MB = 512
"""The most ``maintenance_work_mem`` a build asks for unless ``TIDAL_INDEX_MEMORY_MB`` says
otherwise. Past it pgvector goes on building on disk, many times slower but safe on a small
managed instance, where a larger ask could exhaust the server's memory."""


def worth_dropping(conn: psycopg.Connection[Any], rows: int) -> bool:
    """Whether writing ``rows`` new rows into the live graph costs more than rebuilding the
    whole index after them. Inserting them live would also hold the write's transaction, and
    its locks, open for as long."""
    # Exact: the catalogue's estimate is -1 until a vacuum for an index filled live.
    (indexed,) = conn.execute(
        "select case when to_regclass('documents_embedding_idx') is null then null"
        " else (select count(*) from documents) end"
    ).fetchone()
    return indexed is not None and rows * LIVE_INDEX_COST >= indexed


def drop(conn: psycopg.Connection[Any]) -> None:
    """Drop the index for a bulk load: a row written without it costs a fraction of one
    inserted into the live graph, and ``build`` puts it back in one pass."""
    conn.execute("drop index if exists documents_embedding_idx")


def needed_mb(rows: int, dimension: int) -> int:
    """About what pgvector needs to build the graph of ``rows`` vectors in memory."""
    return int(rows * (dimension * 4 + 512) * 1.3 / 2**20) + 64


def build(
    conn: psycopg.Connection[Any], dimension: int, *, memory_mb: int = INDEX_MEMORY_MB
) -> None:
    """Create the index if it is missing (after a bulk load, or a run that crashed in one),
    with enough ``maintenance_work_mem`` for the graph to be built in memory: past it,
    pgvector goes on building on disk at the row-by-row price.

    Runs that end together would both find the index missing, and ``if not exists`` does not
    cover that: the later catalogue insert fails on its unique key. So builds take turns, and
    the later run finds the index there."""
    with conn.transaction():
        (free,) = conn.execute("select pg_try_advisory_xact_lock(%s)", (INDEX_LOCK,)).fetchone()
        if not free:
            log.info("waiting for another run's build of the vector index")
            conn.execute("select pg_advisory_xact_lock(%s)", (INDEX_LOCK,))
        if conn.execute("select to_regclass('documents_embedding_idx')").fetchone() != (None,):
            return
        rows = conn.execute("select count(*) from documents").fetchone()[0]
        started = time.perf_counter()
        needed = needed_mb(rows, dimension)
        current_mb = conn.execute(
            "select setting::bigint / 1024 from pg_settings where name = 'maintenance_work_mem'"
        ).fetchone()[0]  # the setting is in kB
        if needed > current_mb:
            conn.execute(f"set local maintenance_work_mem = '{min(needed, memory_mb)}MB'")
        if needed > max(current_mb, memory_mb):
            log.warning(
                "building the vector index over %d chunks needs about %d MB, over "
                "TIDAL_INDEX_MEMORY_MB=%d: it goes on on disk, many times slower; raise "
                "TIDAL_INDEX_MEMORY_MB if the database server has the memory",
                rows,
                needed,
                memory_mb,
            )
        conn.execute(VECTOR_INDEX_SQL)
    log.info("built the vector index over %d chunks in %.1f s", rows, time.perf_counter() - started)
