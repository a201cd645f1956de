"""The index's ledger: which version of each file it holds or failed on (``ingested_files``,
keyed by source and path), and its finished runs (``ingest_runs``).

The statements take an open connection, so a file's ledger row is written in the same
transaction as its chunks. ``failed_files``, ``index_status`` and ``record_run`` at a URL read
or write the ledger without setting up a store (no schema, no model, no Prefect): for ``tidal
status``, ``tidal failed`` and a run that stopped before it could open its store.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tidal.records import RunRecord, SourceFile
from tidal.store import FailedFile, IndexStatus
from tidal.store.postgres.connection import connection_errors, first_line

log = logging.getLogger("tidal.store")


def current_files(
    conn: psycopg.Connection[Any], source: str, fingerprint: str, paths: Sequence[str] | None
) -> dict[str, str]:
    """Path → change key of ``source``'s files ingested under ``fingerprint``."""
    query = (
        "select path, content_hash from ingested_files"
        " where source = %s and status = 'ingested' and fingerprint = %s"
    )
    params: tuple[Any, ...] = (source, fingerprint)
    if paths is not None:
        query += " and path = any(%s)"
        params += (list(paths),)
    rows = conn.execute(query, params).fetchall()
    return {path: content_hash for path, content_hash in rows}


def stored_paths(conn: psycopg.Connection[Any], source: str) -> set[str]:
    rows = conn.execute("select path from ingested_files where source = %s", (source,))
    return {row[0] for row in rows}


def mark_ingested(
    conn: psycopg.Connection[Any],
    source: str,
    file: SourceFile,
    *,
    fingerprint: str,
    chunks: int,
    tokens: int,
    attempts: int,
) -> None:
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
        (source, file.path, file.content_hash, fingerprint, chunks, tokens, attempts),
    )


def mark_failed(
    conn: psycopg.Connection[Any],
    source: str,
    path: str,
    content_hash: str,
    *,
    fingerprint: str,
    error: str,
    kind: str,
    attempts: int,
) -> None:
    """The file's chunks are not touched: the last good ones stay searchable."""
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
        (source, path, content_hash, fingerprint, error, kind, attempts),
    )


def forget(conn: psycopg.Connection[Any], source: str, paths: Sequence[str]) -> None:
    conn.execute(
        "delete from ingested_files where source = %s and path = any(%s)", (source, list(paths))
    )


def adopt(conn: psycopg.Connection[Any], source: str, paths: Sequence[str]) -> int | None:
    """Move the rows among ``paths`` that have no source to ``source``, where it has none of its
    own; how many. None when the ledger has no row without a source at all."""
    legacy = conn.execute("select exists (select 1 from ingested_files where source = '')")
    if legacy.fetchone() == (False,):
        return None
    return conn.execute(
        "update ingested_files set source = %s where source = '' and path = any(%s)"
        " and not exists (select 1 from ingested_files o"
        " where o.source = %s and o.path = ingested_files.path)",
        (source, list(paths), source),
    ).rowcount


def select_failed(conn: psycopg.Connection[Any], source: str | None = None) -> list[FailedFile]:
    """Failed files, newest first; of ``source`` only when given."""
    mine = "" if source is None else " and source = %(source)s"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select path, error, error_kind, attempts, updated_at, content_hash, fingerprint"
            f" from ingested_files where status = 'failed'{mine} order by updated_at desc, path",
            {"source": source},
        )
        return [FailedFile(**row) for row in cur.fetchall()]


def insert_run(conn: psycopg.Connection[Any], record: RunRecord) -> None:
    row = {**asdict(record), "counts": Jsonb(record.counts)}
    conn.execute(
        f"insert into ingest_runs ({', '.join(row)}) values ({', '.join(f'%({k})s' for k in row)})",
        row,
    )


def select_status(conn: psycopg.Connection[Any]) -> IndexStatus:
    """What the whole index holds, every source's files, and its last runs."""
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


def _has(conn: psycopg.Connection[Any], table: str) -> bool:
    return conn.execute("select to_regclass(%s)", (table,)).fetchone() != (None,)


def failed_files(url: str) -> list[FailedFile]:
    """Every source's failed files at ``url``, without setting up a store."""
    with connection_errors("read the file table"), psycopg.connect(url) as conn:
        return select_failed(conn) if _has(conn, "ingested_files") else []


def index_status(url: str) -> IndexStatus | None:
    """What the index at ``url`` holds and its last runs, without setting up a store: ``tidal
    status``. None when Tidal never ran there."""
    with connection_errors("read the index"), psycopg.connect(url) as conn:
        return select_status(conn) if _has(conn, "ingest_runs") else None


def record_run(url: str, record: RunRecord) -> bool:
    """Write ``record`` to the ledger at ``url`` without setting up a store, if the index exists
    and Postgres answers within seconds; whether it was written. For a run that stopped before
    it could open its store (a refused key, a service down at start-up)."""
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            if not _has(conn, "ingest_runs"):
                return False
            insert_run(conn, record)
    except psycopg.Error as exc:
        log.warning("could not record the stopped run in the ledger: %s", first_line(exc))
        return False
    return True
