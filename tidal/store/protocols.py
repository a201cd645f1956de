"""What a Store is, role by role, as LangChain keeps its RecordManager apart from its
VectorStore: a part of Tidal that needs one role can say so, and the contract suite
(tests/test_store_contract.py) tests every backend role by role. Unlike LangChain's two, one
backend plays every role, so a file's chunks and its ledger row change in one transaction and
cannot disagree after a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tidal.documents.pages import page_span
from tidal.records import Document, EmbeddedChunk, RunRecord, SourceFile, Vector

if TYPE_CHECKING:
    from tidal.store import FailedFile, SearchHit

RRF_K = 50
"""Reciprocal rank fusion's k, as in Supabase's ``hybrid_search``: a rank r adds 1 / (k + r)."""


def team_of(path: str, kind: str) -> str | None:
    """The team a design belongs to, by the bucket's layout ``designs/<team>/<name>.json``."""
    parts = path.split("/")
    return parts[1] if kind == "design" and len(parts) > 2 and parts[0] == "designs" else None


def chunk_metadata(
    file: SourceFile, document: Document, chunk: EmbeddedChunk, source: str
) -> dict[str, Any]:
    """A stored chunk's metadata, the same on every backend: what a search hit carries and a
    search's ``filter`` picks on."""
    metadata: dict[str, Any] = {
        "source_path": file.path,
        "type": document.kind,
        "title": document.title,
        "chunk_index": chunk.chunk.index,
        "tokens": chunk.chunk.token_count,
    }
    if chunk.chunk.section:
        metadata["section"] = chunk.chunk.section
    if team := team_of(file.path, document.kind):
        metadata["team"] = team  # {"team": ...} picks one team's designs
    if pages := page_span(document.page_starts, chunk.chunk.start, len(chunk.chunk.text)):
        metadata["pages"] = pages  # a PDF's: [first, last], numbered from 1
    if source:
        metadata["source"] = source  # a filter can pick one source: {"source": ...}
    return metadata


@runtime_checkable
class VectorStore(Protocol):
    """The chunks and their vectors, as searches see them. A store reads and writes the files of
    its own source (``open_store``'s ``source``); searches see every source's."""

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
        """Swap the file's chunks for ``chunks`` atomically and mark it ingested in the ledger,
        in the same transaction: a reader sees the old chunk set or the new one, never a mix."""
        ...

    def delete_files(self, paths: Sequence[str]) -> int:
        """Drop files' chunks and ledger rows together; returns how many chunks went."""
        ...

    def search(
        self,
        embedding: Sequence[float],
        *,
        limit: int = 5,
        filter: dict[str, Any] | None = None,
        path_prefix: str | None = None,
    ) -> list[SearchHit]:
        """The ``limit`` chunks most similar to ``embedding`` (cosine), best first, of those
        whose metadata (``chunk_metadata``) holds every key and value of ``filter`` and whose
        path starts with ``path_prefix``: min(limit, matching chunks) of them, however few of
        the nearest chunks match. A hit's score is its cosine similarity."""
        ...

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
        """The ``limit`` best chunks by reciprocal rank fusion of two rankings of the chunks
        that ``filter`` and ``path_prefix`` keep (as ``search``): those whose words of ``query``
        carry at least 0.6 of its weight (full text, English stemming, each word weighing its
        inverse document frequency), by that weight; and those nearest to
        ``embedding``, each ``2 * limit`` long. A hit's score is ``full_text_weight / (rrf_k +
        its full-text rank) + semantic_weight / (rrf_k + its vector rank)``, a rank it lacks
        adding nothing. With ``embedding`` None (or ``semantic_weight`` 0) only the full-text
        matches rank; otherwise min(limit, matching chunks) come back."""
        ...


@runtime_checkable
class FileLedger(Protocol):
    """Which version of each file the index holds or failed on, and the runs that made it."""

    def current_files(self, fingerprint: str, paths: Sequence[str] | None = None) -> dict[str, str]:
        """Path → change key of every file ingested under ``fingerprint`` (of ``paths`` only,
        when given). ``tidal.sync.is_unchanged`` reads it: the one place "unchanged" is decided."""
        ...

    def stored_paths(self) -> set[str]:
        """Every path of this store's source that the index knows, ingested or failed."""
        ...

    def failed_files(self) -> list[FailedFile]:
        """This source's files whose last attempt failed, the latest failure first."""
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

    def record_run(self, record: RunRecord) -> None:
        """Add a finished run to the index's ledger."""
        ...

    def adopt(self, paths: Sequence[str]) -> int:
        """Take as this source's the files among ``paths`` that an index made before files
        knew their source holds with none; how many."""
        ...


@runtime_checkable
class FileClaims(Protocol):
    """Who is working on which file."""

    def claim(self, path: str) -> AbstractContextManager[None]:
        """Exclusive hold on one file across processes and machines, freed if the holder dies."""
        ...


@runtime_checkable
class EmbeddingCache(Protocol):
    """Vectors already paid for: stored with a file, or bought and kept until their file's write."""

    def cached_embeddings(self, hashes: Sequence[str], embedder: str) -> dict[str, Vector]:
        """Vectors already stored, or kept by ``keep_embeddings``, for these chunk hashes."""
        ...

    def keep_embeddings(self, vectors: dict[str, Vector], embedder: str) -> None:
        """Hold vectors just bought (by chunk hash) until their file is written, durably: a
        crash or a retry then re-buys only the batch that was in flight."""
        ...

    def forget_kept_embeddings(self, older_than_days: float) -> int:
        """Drop vectors kept by ``keep_embeddings`` that no file's write has claimed for this
        long (a file that kept failing, or changed before its retry); returns how many."""
        ...


@runtime_checkable
class VectorIndexUpkeep(Protocol):
    """The search index around bulk loads."""

    def suspend_vector_index(self) -> None:
        """Stop keeping the search index up row by row, for a bulk load."""
        ...

    def build_vector_index(self) -> None:
        """Make sure the search index exists (building it after a bulk load)."""
        ...


@runtime_checkable
class Store(VectorStore, FileLedger, FileClaims, EmbeddingCache, VectorIndexUpkeep, Protocol):
    """A vector index plus a ledger of which file versions it holds (the source of truth)."""

    def close(self) -> None: ...
