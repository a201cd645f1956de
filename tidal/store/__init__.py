"""Where chunks and their vectors live, and the ledger of which file versions they are.

A new backend is one new module implementing ``Store`` (its roles are in ``protocols``) that
passes tests/test_store_contract.py. The functions here open the configured backend, or read
it without opening a store (``index_status``, ``failed_files``: for the CLI).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tidal.records import STATUSES, RunRecord
from tidal.store.protocols import (
    RRF_K,
    EmbeddingCache,
    FileClaims,
    FileLedger,
    Store,
    VectorIndexUpkeep,
    VectorStore,
    chunk_metadata,
)

if TYPE_CHECKING:
    from tidal.settings import Settings

log = logging.getLogger("tidal.store")


@dataclass(frozen=True)
class SearchHit:
    source_path: str
    chunk_index: int
    content: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class FailedFile:
    """A file whose last attempt failed, as ``tidal failed`` shows it."""

    path: str
    error: str | None
    error_kind: str | None
    attempts: int
    updated_at: datetime
    content_hash: str = ""
    """The change key of the version that failed."""
    fingerprint: str = ""


@dataclass(frozen=True)
class IndexStatus:
    """What ``tidal status`` says: what the index holds and how its runs went."""

    files: int
    chunks: int
    failed: int
    last_run: RunRecord | None
    last_success: RunRecord | None

    def render(self, *, now: datetime, prefect_ui: str | None = None) -> str:
        """Lines for a terminal; ``prefect_ui`` links the last run to its page there."""
        failed = f", {self.failed} failed (`tidal failed`)" if self.failed else ", 0 failed"
        lines = [f"index: {self.files} files, {self.chunks} chunks{failed}"]
        run = self.last_run
        if run is None:
            return "\n".join([*lines, "no run yet: `python flows/ingest.py` makes the first"])
        counts = ", ".join(
            f"{k} {run.counts.get(k, 0)}"
            for k in STATUSES
            if run.counts.get(k) or k in ("ingested", "skipped", "failed")
        )
        deleted = f", deleted {run.deleted}" if run.deleted else ""
        lines.append(
            f"last run: {run.outcome} {_when(run.finished_at, now)}, {run.seconds:.1f} s, "
            f"{sum(run.counts.values())} files: {counts}{deleted}"
        )
        if run.message:
            lines.append(f"  {run.message}")
        if run.flow_run_name:
            where = f" {prefect_ui}/runs/flow-run/{run.flow_run_id}" if prefect_ui else ""
            lines.append(f"  Prefect flow run {run.flow_run_name!r}{where}")
        else:
            lines.append("  no Prefect flow run (nothing to ingest)")
        success = self.last_success
        if success is None:
            lines.append("last successful sync: never")
        elif success is not run:
            lines.append(f"last successful sync: {_when(success.finished_at, now)}")
        return "\n".join(lines)


def _when(moment: datetime, now: datetime) -> str:
    """``2026-11-30 00:56 UTC (3 min ago)``: the time, and how long ago it was."""
    ago = max((now - moment).total_seconds(), 0)
    if ago < 120:
        since = f"{ago:.0f} s"
    elif ago < 7200:
        since = f"{ago / 60:.0f} min"
    elif ago < 172800:
        since = f"{ago / 3600:.0f} h"
    else:
        since = f"{ago / 86400:.0f} days"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({since} ago)"


def database_url(settings: Settings) -> str:
    """``TIDAL_DATABASE_URL``, or the embedded server's (started on first use)."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    from tidal.store.embedded import embedded_database_url

    return embedded_database_url(settings.data_dir)


def record_stopped_start(settings: Settings, reason: str, *, started_at: datetime) -> bool:
    """Put a run that stopped before its first file in the index's ledger, if Postgres answers
    (when it is what failed, nothing can be written); whether it was written."""
    from tidal.store.postgres import record_run

    record = RunRecord.stopped_at_start(
        settings.source_uri, reason, started_at=started_at, finished_at=datetime.now(UTC)
    )
    try:
        url = database_url(settings)
    except Exception as exc:  # noqa: BLE001 - the embedded server may be what failed
        log.warning("could not record the stopped run in the ledger: %s", exc)
        return False
    return record_run(url, record)


def open_store(settings: Settings, *, dimension: int, pool_size: int = 2) -> Store:
    """The Store on the configured Postgres, its schema ready for ``dimension``-wide vectors."""
    from tidal.store.postgres import PostgresStore

    return PostgresStore(
        database_url(settings),
        dimension=dimension,
        pool_size=pool_size,
        outage_seconds=settings.outage_seconds,
        source=settings.source_identity,
        index_memory_mb=settings.index_memory_mb,
    )


def schema_sql(dimension: int) -> str:
    """The SQL that sets an index up for ``dimension``-wide vectors, ready to run (``tidal db
    sql``); stores apply it themselves when they open."""
    from tidal.store.postgres import schema_sql as postgres_schema_sql

    return postgres_schema_sql(dimension)


def index_status(settings: Settings) -> IndexStatus | None:
    """What the configured index holds, every source's files, and its last runs (``tidal
    status``), read without setting up a store or loading a model. None when Tidal never ran
    there."""
    from tidal.store.postgres import index_status as postgres_index_status

    return postgres_index_status(database_url(settings))


def failed_files(settings: Settings) -> list[FailedFile]:
    """Every source's failed files in the configured index (``tidal failed``), latest failure
    first, read without setting up a store or loading a model."""
    from tidal.store.postgres import failed_files as postgres_failed_files

    return postgres_failed_files(database_url(settings))


__all__ = [
    "RRF_K",
    "EmbeddingCache",
    "FailedFile",
    "FileClaims",
    "FileLedger",
    "IndexStatus",
    "SearchHit",
    "Store",
    "VectorIndexUpkeep",
    "VectorStore",
    "chunk_metadata",
    "database_url",
    "failed_files",
    "index_status",
    "open_store",
    "record_stopped_start",
    "schema_sql",
]
