"""Where chunks and their vectors live. A new backend is one new module implementing ``Store``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tidal.records import STATUSES, Document, EmbeddedChunk, RunRecord, SourceFile, Vector

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


@runtime_checkable
class Store(Protocol):
    """A vector index plus a table of which file versions it holds (the source of truth)."""

    def current_files(self, fingerprint: str, paths: Sequence[str] | None = None) -> dict[str, str]:
        """Path → change key of every file ingested under ``fingerprint`` (of ``paths`` only,
        when given). ``tidal.sync.is_unchanged`` reads it: the one place "unchanged" is decided."""
        ...

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
        """Swap the file's chunks for ``chunks`` atomically and mark it ingested."""
        ...

    def claim(self, path: str) -> AbstractContextManager[None]:
        """Exclusive hold on one file across processes and machines, freed if the holder dies."""
        ...

    def cached_embeddings(self, hashes: Sequence[str], embedder: str) -> dict[str, Vector]:
        """Vectors already stored, or kept by ``keep_embeddings``, for these chunk hashes."""
        ...

    def keep_embeddings(self, vectors: dict[str, Vector], embedder: str) -> None:
        """Hold vectors just bought (by chunk hash) until their file is written, durably: a
        crash or a retry then re-buys only the batch that was in flight."""
        ...

    def stored_paths(self) -> set[str]:
        """Every path of this store's source that the index knows, ingested or failed."""
        ...

    def adopt(self, paths: Sequence[str]) -> int:
        """Take as this source's the files among ``paths`` that an index made before files
        knew their source holds with none; how many."""
        ...

    def failed_files(self) -> list[FailedFile]: ...

    def delete_files(self, paths: Sequence[str]) -> int:
        """Drop files' chunks and records together; returns how many chunks went."""
        ...

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
        """Mark a file failed; its previously stored chunks (if any) stay searchable."""
        ...

    def forget_kept_embeddings(self, older_than_days: float) -> int:
        """Drop vectors kept by ``keep_embeddings`` that no file's write has claimed for this
        long (a file that kept failing, or changed before its retry); returns how many."""
        ...

    def record_run(self, record: RunRecord) -> None:
        """Add a finished run to the index's ledger."""
        ...

    def suspend_vector_index(self) -> None:
        """Stop keeping the search index up row by row, for a bulk load."""
        ...

    def build_vector_index(self) -> None:
        """Make sure the search index exists (building it after a bulk load)."""
        ...

    def search(
        self, embedding: Sequence[float], *, limit: int = 5, filter: dict[str, Any] | None = None
    ) -> list[SearchHit]: ...

    def close(self) -> None: ...


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
    )


__all__ = ["FailedFile", "IndexStatus", "SearchHit", "Store", "database_url", "open_store"]
