"""The Store in a process's memory: for tests of the run's logic and quick experiments.

It keeps the contract the Postgres store keeps - a file's chunks and its file-table row change
together, claims exclude each other - with dicts and locks in place of tables and transactions.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tidal.records import Document, EmbeddedChunk, RunRecord, SourceFile, Vector
from tidal.store import FailedFile, SearchHit


@dataclass(frozen=True)
class _Row:
    """One file's entry in the file table."""

    content_hash: str
    fingerprint: str
    status: str
    chunk_count: int = 0
    error: str | None = None
    error_kind: str | None = None
    attempts: int = 1
    updated_at: datetime = datetime.min.replace(tzinfo=UTC)


class MemoryStore:
    """Chunks and the file table in dicts, guarded by one lock; claims are per-path locks."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[tuple[EmbeddedChunk, str, Document]]] = {}
        self.files: dict[str, _Row] = {}
        self.held: dict[tuple[str, str], Vector] = {}
        """(chunk hash, embedder) -> vector bought but not yet written with its file."""
        self.runs: list[RunRecord] = []
        """The ledger, oldest first."""
        self.index_suspended = False
        """Between ``suspend_vector_index`` and ``build_vector_index``: what a test checks."""
        self._lock = threading.Lock()
        self._claims: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def current_files(self, fingerprint: str, paths: Sequence[str] | None = None) -> dict[str, str]:
        wanted = None if paths is None else set(paths)
        with self._lock:
            return {
                path: row.content_hash
                for path, row in self.files.items()
                if row.status == "ingested"
                and row.fingerprint == fingerprint
                and (wanted is None or path in wanted)
            }

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
        with self._lock:
            self.chunks[file.path] = [(c, embedder, document) for c in chunks]
            for c in chunks:
                self.held.pop((c.chunk.hash, embedder), None)
            self.files[file.path] = _Row(
                file.content_hash,
                fingerprint,
                "ingested",
                chunk_count=len(chunks),
                attempts=attempts,
                updated_at=datetime.now(UTC),
            )

    @contextmanager
    def claim(self, path: str) -> Iterator[None]:
        with self._lock:
            lock = self._claims[path]
        with lock:
            yield

    def cached_embeddings(self, hashes: Sequence[str], embedder: str) -> dict[str, Vector]:
        wanted = set(hashes)
        with self._lock:
            found = {
                c.chunk.hash: c.embedding
                for rows in self.chunks.values()
                for c, by, _ in rows
                if by == embedder and c.chunk.hash in wanted
            }
            found.update(
                {h: v for (h, by), v in self.held.items() if by == embedder and h in wanted}
            )
            return found

    def keep_embeddings(self, vectors: dict[str, Vector], embedder: str) -> None:
        with self._lock:
            for hash_, vector in vectors.items():
                self.held.setdefault((hash_, embedder), vector)

    def forget_kept_embeddings(self, older_than_days: float) -> int:
        return 0  # a MemoryStore lives for one process: nothing gets that old

    def record_run(self, record: RunRecord) -> None:
        with self._lock:
            self.runs.append(record)

    def suspend_vector_index(self) -> None:
        self.index_suspended = True

    def build_vector_index(self) -> None:
        self.index_suspended = False

    def adopt(self, paths: Sequence[str]) -> int:
        """Nothing to adopt: a memory store holds one source's files."""
        return 0

    def stored_paths(self) -> set[str]:
        with self._lock:
            return set(self.files)

    def failed_files(self) -> list[FailedFile]:
        with self._lock:
            failed = [
                FailedFile(
                    path,
                    r.error,
                    r.error_kind,
                    r.attempts,
                    r.updated_at,
                    r.content_hash,
                    r.fingerprint,
                )
                for path, r in self.files.items()
                if r.status == "failed"
            ]
        return sorted(failed, key=lambda f: (-f.updated_at.timestamp(), f.path))

    def delete_files(self, paths: Sequence[str]) -> int:
        with self._lock:
            deleted = sum(len(self.chunks.pop(p, [])) for p in paths)
            for path in paths:
                self.files.pop(path, None)
        return deleted

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
        with self._lock:
            self.files[path] = _Row(
                content_hash,
                fingerprint,
                "failed",
                error=error,
                error_kind=kind,
                attempts=attempts,
                updated_at=datetime.now(UTC),
            )

    def search(
        self, embedding: Sequence[float], *, limit: int = 5, filter: dict[str, Any] | None = None
    ) -> list[SearchHit]:
        query = np.asarray(embedding, dtype=np.float64)
        hits = []
        with self._lock:
            for path, rows in self.chunks.items():
                for c, _, document in rows:
                    metadata = {"source_path": path, "type": document.kind, "title": document.title}
                    if filter and any(metadata.get(k) != v for k, v in filter.items()):
                        continue
                    vector = np.asarray(c.embedding, dtype=np.float64)
                    score = float(query @ vector / (np.linalg.norm(query) * np.linalg.norm(vector)))
                    hits.append(SearchHit(path, c.chunk.index, c.chunk.text, score, metadata))
        return sorted(hits, key=lambda h: -h.score)[:limit]

    def close(self) -> None:
        """Nothing to release."""
