"""Where chunks and their vectors live. A new backend is one new module implementing ``Store``."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tidal.records import Document, EmbeddedChunk, SourceFile, Vector

if TYPE_CHECKING:
    from tidal.settings import Settings


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

    def stored_paths(self) -> set[str]: ...

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


def open_store(settings: Settings, *, dimension: int, pool_size: int = 2) -> Store:
    """The Store on the configured Postgres, its schema ready for ``dimension``-wide vectors."""
    from tidal.store.postgres import PostgresStore

    return PostgresStore(database_url(settings), dimension=dimension, pool_size=pool_size)


__all__ = ["FailedFile", "SearchHit", "Store", "database_url", "open_store"]
