"""The schema: ``schema.sql`` for a vector width, applied only when it is not already current."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import psycopg

from tidal.errors import ConfigError

SCHEMA_LOCK = 0x7469_6461_6C
"""The advisory lock ("tidal") that serialises processes setting the schema up."""

VECTOR_INDEX_SQL = (
    "create index if not exists documents_embedding_idx\n"
    "    on documents using hnsw (embedding vector_cosine_ops);\n"
)
"""The HNSW index, as schema.sql writes it: the one statement a store's set-up leaves out."""


MAX_INDEXED_DIMENSIONS = 2000
"""The widest ``vector`` pgvector's HNSW index takes."""


def schema_sql(dimension: int, *, vector_index: bool = True) -> str:
    """schema.sql for ``dimension``-wide vectors; ``vector_index=False`` leaves the HNSW index
    to the run (``build_vector_index``), so opening a store never builds or rebuilds it."""
    check_dimension(dimension)
    text = resources.files("tidal.store").joinpath("schema.sql").read_text("utf-8")
    if not vector_index:
        assert VECTOR_INDEX_SQL in text, "schema.sql and VECTOR_INDEX_SQL disagree"
        text = text.replace(VECTOR_INDEX_SQL, "")
    return text.replace("__DIMENSION__", str(int(dimension)))


def ensure_schema(conn: psycopg.Connection[Any], dimension: int) -> None:
    """Create what is missing; refuse a ``documents`` table built for another dimension.

    schema.sql's ``alter table`` statements take an exclusive lock on each table even when they
    change nothing: the lock waits for every open transaction that used the table (a file's
    write, a search, an index build), and every statement after it queues behind it. So the
    applied schema is marked with its digest (a comment on ``ingest_runs``), and a process
    opening a store on a schema that is already current reads the catalogue only: a worker or
    a second run joining a busy index takes no table lock.

    Processes that find the schema not current take turns (an advisory lock), and each reads
    the vector width once the lock is its own, so a table another created meanwhile for
    another model is refused, never mixed.
    """
    sql = schema_sql(dimension, vector_index=False)
    marker = f"tidal schema {hashlib.sha256(sql.encode()).hexdigest()[:16]}"
    with conn.transaction():
        if _schema_marker(conn) != marker:
            conn.execute("select pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
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


def check_dimension(dimension: int) -> None:
    """A width the index can hold, or ConfigError saying how to get one. Refused up front: an
    index that cannot be built would fail the run after every file was embedded."""
    if dimension < 1:
        raise ConfigError(f"vectors of {dimension} dimensions: a vector has at least 1")
    if dimension > MAX_INDEXED_DIMENSIONS:
        raise ConfigError(
            f"vectors of {dimension} dimensions: pgvector's HNSW index takes at most "
            f"{MAX_INDEXED_DIMENSIONS}; set TIDAL_EMBEDDING_DIMENSIONS to {MAX_INDEXED_DIMENSIONS}"
            " or fewer (the text-embedding-3 models shorten their vectors, e.g. to 1536)"
        )
