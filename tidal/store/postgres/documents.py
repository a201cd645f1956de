"""The ``documents`` table: a row per chunk, with its vector, and the search over them.

It follows LangChain's SupabaseVectorStore (``match_documents`` searches it), so its readers
work unchanged; ``source``, ``source_path``, ``chunk_index`` and ``chunk_hash`` tie each row to
its file. The statements take an open connection, so a file's rows are swapped in the same
transaction as its ledger row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row

from tidal.records import Document, EmbeddedChunk, SourceFile
from tidal.store import SearchHit, chunk_metadata

_ID_NAMESPACE = uuid.UUID("5b0c1f55-7a1d-4c3e-9a4e-746964616c00")

WRITE_BATCH = 500
"""Rows sent per ``executemany`` when a file's chunks are written: their parameters are built
batch by batch, so a file of many thousand chunks never holds a second copy of all its rows."""


def chunk_id(path: str, index: int, hash_: str, source: str = "") -> uuid.UUID:
    """Deterministic row id: the same chunk of the same file always gets the same id."""
    name = f"{path}\x00{index}\x00{hash_}"
    return uuid.uuid5(_ID_NAMESPACE, f"{source}\x00{name}" if source else name)


def replace_chunks(
    conn: psycopg.Connection[Any],
    source: str,
    file: SourceFile,
    document: Document,
    chunks: Sequence[EmbeddedChunk],
    embedder: str,
) -> None:
    """Swap the file's rows for ``chunks``."""
    delete_chunks(conn, source, [file.path])
    with conn.cursor() as cur:
        for start in range(0, len(chunks), WRITE_BATCH):
            cur.executemany(
                "insert into documents (id, content, metadata, embedding,"
                " source_path, chunk_index, chunk_hash, embedder, source)"
                " values (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)",
                _rows(file, document, chunks[start : start + WRITE_BATCH], embedder, source),
            )


def delete_chunks(conn: psycopg.Connection[Any], source: str, paths: Sequence[str]) -> int:
    """Drop the files' rows; how many went."""
    return conn.execute(
        "delete from documents where source = %s and source_path = any(%s)", (source, list(paths))
    ).rowcount


def adopt_chunks(conn: psycopg.Connection[Any], source: str, paths: Sequence[str]) -> None:
    """Move the rows among ``paths`` with no source to ``source``, where it has none of its own."""
    conn.execute(
        "update documents set source = %s where source = '' and source_path = any(%s)"
        " and not exists (select 1 from documents o"
        " where o.source = %s and o.source_path = documents.source_path)",
        (source, list(paths), source),
    )


def search(
    conn: psycopg.Connection[Any],
    embedding: Sequence[float],
    *,
    limit: int,
    filter: dict[str, Any] | None,
    path_prefix: str | None,
) -> list[SearchHit]:
    """The ``limit`` rows nearest ``embedding`` whose metadata contains ``filter`` (and whose
    path starts with ``path_prefix``): ``match_documents``, which returns min(limit, matching
    rows) on any pgvector (see schema.sql)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select id, content, metadata, similarity as score"
            " from match_documents(%s, %s, %s::jsonb, %s)",
            (_vector(embedding), limit, json.dumps(filter or {}), path_prefix),
        )
        return [_hit(row) for row in cur.fetchall()]


def hybrid_search(
    conn: psycopg.Connection[Any],
    query: str,
    embedding: Sequence[float] | None,
    *,
    limit: int,
    filter: dict[str, Any] | None,
    path_prefix: str | None,
    full_text_weight: float,
    semantic_weight: float,
    rrf_k: int,
) -> list[SearchHit]:
    """``hybrid_search``: full text and vectors fused by reciprocal rank; full text alone when
    ``embedding`` is None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select id, content, metadata, score"
            " from hybrid_search(%s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
            (
                query,
                None if embedding is None else _vector(embedding),
                limit,
                full_text_weight,
                semantic_weight,
                rrf_k,
                json.dumps(filter or {}),
                path_prefix,
            ),
        )
        return [_hit(row) for row in cur.fetchall()]


def _vector(embedding: Sequence[float]) -> np.ndarray:
    return np.asarray(embedding, dtype=np.float32)


def _hit(row: dict[str, Any]) -> SearchHit:
    return SearchHit(
        source_path=row["metadata"].get("source_path", ""),
        chunk_index=int(row["metadata"].get("chunk_index", 0)),
        content=row["content"],
        score=float(row["score"]),
        metadata=row["metadata"],
    )


def _rows(
    file: SourceFile,
    document: Document,
    chunks: Sequence[EmbeddedChunk],
    embedder: str,
    source: str,
) -> Iterator[tuple[Any, ...]]:
    """``documents`` rows for ``chunks``, made as the driver asks for them."""
    for e in chunks:
        yield (
            chunk_id(file.path, e.chunk.index, e.chunk.hash, source),
            e.chunk.text,
            json.dumps(chunk_metadata(file, document, e, source)),
            np.asarray(e.embedding, dtype=np.float32),
            file.path,
            e.chunk.index,
            e.chunk.hash,
            embedder,
            source,
        )
