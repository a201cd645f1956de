"""The Store in a process's memory: for tests of the run's logic and quick experiments.

It keeps the contract the Postgres store keeps (tests/test_store_contract.py runs both): a
file's chunks and its ledger row change together, files are keyed by their source and path,
searches see every source's chunks with the same metadata, claims exclude each other. Dicts
under one lock stand in for tables and transactions. Stores sharing one ``MemoryIndex`` are
stores of several sources on one database.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tidal.records import Document, EmbeddedChunk, RunRecord, SourceFile, Vector
from tidal.store import RRF_K, FailedFile, IndexStatus, SearchHit, chunk_metadata
from tidal.store.memory_search import StoredChunk, fuse, kept_by, matching, nearest

Key = tuple[str, str]
"""A file: its source and its path."""


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


class MemoryIndex:
    """The tables every store on this index shares, guarded by one lock."""

    def __init__(self) -> None:
        self.chunks: dict[Key, list[StoredChunk]] = {}
        self.files: dict[Key, _Row] = {}
        self.kept: dict[tuple[str, str], tuple[Vector, datetime]] = {}
        """(chunk hash, embedder) -> vector bought but not yet written with its file, and when."""
        self.runs: list[RunRecord] = []
        """The ledger, oldest first."""
        self.vector_index_suspended = False
        """Between ``suspend_vector_index`` and ``build_vector_index``: what a test checks."""
        self.lock = threading.Lock()
        self.claims: defaultdict[Key, threading.Lock] = defaultdict(threading.Lock)

    def status(self) -> IndexStatus:
        """What ``tidal status`` reads, as ``tidal.store.postgres.index_status`` does."""
        with self.lock:
            ingested = [r for r in self.files.values() if r.status == "ingested"]
            failed = sum(r.status == "failed" for r in self.files.values())
            latest = sorted(enumerate(self.runs), key=lambda run: (run[1].finished_at, run[0]))
        completed = [run for _, run in latest if run.outcome == "completed"]
        return IndexStatus(
            files=len(ingested),
            chunks=sum(r.chunk_count for r in ingested),
            failed=failed,
            last_run=latest[-1][1] if latest else None,
            last_success=completed[-1] if completed else None,
        )


class MemoryStore:
    """The files of ``source`` in ``index`` (a new one unless given)."""

    def __init__(self, source: str = "", *, index: MemoryIndex | None = None) -> None:
        self.source = source
        self.index = MemoryIndex() if index is None else index

    @property
    def runs(self) -> list[RunRecord]:
        return self.index.runs

    @property
    def index_suspended(self) -> bool:
        return self.index.vector_index_suspended

    # --- the vectors --------------------------------------------------------------------------

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
        key = (self.source, file.path)
        metadata = [chunk_metadata(file, document, c, self.source) for c in chunks]
        stored = [StoredChunk(c, embedder, m) for c, m in zip(chunks, metadata, strict=True)]
        with self.index.lock:
            self.index.chunks[key] = stored
            for c in chunks:
                self.index.kept.pop((c.chunk.hash, embedder), None)
            self.index.files[key] = _Row(
                file.content_hash,
                fingerprint,
                "ingested",
                chunk_count=len(chunks),
                attempts=attempts,
                updated_at=datetime.now(UTC),
            )

    def delete_files(self, paths: Sequence[str]) -> int:
        keys = [(self.source, path) for path in paths]
        with self.index.lock:
            deleted = sum(len(self.index.chunks.pop(key, [])) for key in keys)
            for key in keys:
                self.index.files.pop(key, None)
        return deleted

    def search(
        self,
        embedding: Sequence[float],
        *,
        limit: int = 5,
        filter: dict[str, Any] | None = None,
        path_prefix: str | None = None,
    ) -> list[SearchHit]:
        kept = kept_by(self._every_chunk(), filter, path_prefix)
        return [s.hit(score) for s, score in nearest(embedding, kept)][:limit]

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
        """Postgres' ``hybrid_search`` in miniature (``tidal.store.memory_search``)."""
        every = self._every_chunk()
        kept = kept_by(every, filter, path_prefix)
        near = nearest(embedding, kept) if embedding is not None else []
        rankings: list[tuple[float, list[StoredChunk]]] = []
        if full_text_weight > 0:
            similarity = {id(s): score for s, score in near}
            rankings.append((full_text_weight, matching(query, similarity, kept, every)))
        if near and semantic_weight > 0:
            rankings.append((semantic_weight, [s for s, _ in near]))
        return fuse(rankings, limit=limit, rrf_k=rrf_k)

    def _every_chunk(self) -> list[StoredChunk]:
        """Every source's chunks: a search sees them all, as on one database."""
        with self.index.lock:
            return [s for chunks in self.index.chunks.values() for s in chunks]

    # --- the ledger ---------------------------------------------------------------------------

    def current_files(self, fingerprint: str, paths: Sequence[str] | None = None) -> dict[str, str]:
        wanted = None if paths is None else set(paths)
        with self.index.lock:
            return {
                path: row.content_hash
                for (source, path), row in self.index.files.items()
                if source == self.source
                and row.status == "ingested"
                and row.fingerprint == fingerprint
                and (wanted is None or path in wanted)
            }

    def stored_paths(self) -> set[str]:
        with self.index.lock:
            return {path for source, path in self.index.files if source == self.source}

    def failed_files(self) -> list[FailedFile]:
        with self.index.lock:
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
                for (source, path), r in self.index.files.items()
                if source == self.source and r.status == "failed"
            ]
        return sorted(failed, key=lambda f: (-f.updated_at.timestamp(), f.path))

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
        key = (self.source, path)
        with self.index.lock:
            failed = _Row(content_hash, fingerprint, "failed")
            self.index.files[key] = replace(
                self.index.files.get(key, failed),  # the chunks it counted stay stored
                content_hash=content_hash,
                fingerprint=fingerprint,
                status="failed",
                error=error,
                error_kind=kind,
                attempts=attempts,
                updated_at=datetime.now(UTC),
            )

    def record_run(self, record: RunRecord) -> None:
        with self.index.lock:
            self.index.runs.append(record)

    def adopt(self, paths: Sequence[str]) -> int:
        """As Postgres adopts: files with no source, among ``paths``, where this source has
        none of its own at that path."""
        if not self.source or not paths:
            return 0
        index = self.index
        with index.lock:
            if not any(source == "" for source, _ in index.files):
                return 0
            adopted = 0
            for path in dict.fromkeys(paths):
                legacy, mine = ("", path), (self.source, path)
                if legacy in index.files and mine not in index.files:
                    index.files[mine] = index.files.pop(legacy)
                    adopted += 1
                if legacy in index.chunks and mine not in index.chunks:
                    index.chunks[mine] = index.chunks.pop(legacy)
        return adopted

    # --- claims -------------------------------------------------------------------------------

    @contextmanager
    def claim(self, path: str) -> Iterator[None]:
        with self.index.lock:
            lock = self.index.claims[(self.source, path)]
        with lock:
            yield

    # --- bought vectors -----------------------------------------------------------------------

    def cached_embeddings(self, hashes: Sequence[str], embedder: str) -> dict[str, Vector]:
        wanted = set(hashes)
        with self.index.lock:
            found = {
                s.embedded.chunk.hash: s.embedded.embedding
                for chunks in self.index.chunks.values()
                for s in chunks
                if s.embedder == embedder and s.embedded.chunk.hash in wanted
            }
            found.update(
                {
                    h: vector
                    for (h, by), (vector, _) in self.index.kept.items()
                    if by == embedder and h in wanted
                }
            )
            return found

    def keep_embeddings(self, vectors: dict[str, Vector], embedder: str) -> None:
        now = datetime.now(UTC)
        with self.index.lock:
            for hash_, vector in vectors.items():
                self.index.kept.setdefault((hash_, embedder), (vector, now))

    def forget_kept_embeddings(self, older_than_days: float) -> int:
        cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
        with self.index.lock:
            old = [key for key, (_, kept_at) in self.index.kept.items() if kept_at < cutoff]
            for key in old:
                del self.index.kept[key]
        return len(old)

    # --- the vector index ---------------------------------------------------------------------

    def suspend_vector_index(self) -> None:
        self.index.vector_index_suspended = True

    def build_vector_index(self) -> None:
        self.index.vector_index_suspended = False

    def close(self) -> None:
        """Nothing to release."""
