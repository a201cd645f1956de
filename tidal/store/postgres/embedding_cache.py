"""Vectors bought but not yet written with their file (``embedding_cache``), and the look-up
that spares buying a chunk's vector twice.

Vectors are kept as each embedding batch returns, so a crash or a retry re-buys only the batch
that was in flight; a file's write takes its chunks' vectors out in its own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg

from tidal.records import Vector


def cached(
    conn: psycopg.Connection[Any], hashes: Sequence[str], embedder: str
) -> dict[str, Vector]:
    """Vectors for these chunk hashes by ``embedder``, kept or stored with any source's file."""
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


def keep(conn: psycopg.Connection[Any], vectors: dict[str, Vector], embedder: str) -> None:
    """Hold bought vectors until their file's write; a hash already kept keeps its vector."""
    rows = [
        (hash_, embedder, np.asarray(vector, dtype=np.float32)) for hash_, vector in vectors.items()
    ]
    # One transaction, not a commit (and its flush) per row.
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "insert into embedding_cache (chunk_hash, embedder, embedding)"
            " values (%s, %s, %s) on conflict do nothing",
            rows,
        )


def taken(conn: psycopg.Connection[Any], hashes: Sequence[str], embedder: str) -> None:
    """Drop the kept vectors a file's write now holds in ``documents``."""
    conn.execute(
        "delete from embedding_cache where embedder = %s and chunk_hash = any(%s)",
        (embedder, list(hashes)),
    )


def forget_kept(conn: psycopg.Connection[Any], older_than_days: float) -> int:
    """Drop kept vectors no write took for ``older_than_days``; how many."""
    return conn.execute(
        "delete from embedding_cache where created_at < now() - make_interval(secs => %s)",
        (older_than_days * 86400,),
    ).rowcount
