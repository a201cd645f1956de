"""One file through every stage: read → parse → chunk → embed → store.

This is the whole of Tidal's work for a file, with no orchestration in it: Prefect's task
wraps ``Pipeline.ingest`` and adds retries, a task run per file and logging around it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

import numpy as np

from tidal.chunking import CHUNKER_VERSION, ENCODING, ChunkingOptions, chunk_text
from tidal.context import Outline, in_context
from tidal.embedders import Embedder, open_embedder
from tidal.errors import (
    ClaimLost,
    NothingToIndex,
    PermanentError,
    TidalError,
    TransientError,
    is_transient,
)
from tidal.parsing import PARSER_VERSION, parse
from tidal.records import Chunk, Document, EmbeddedChunk, FileResult, SourceFile, Vector
from tidal.settings import Settings
from tidal.sources import Source, open_source
from tidal.store import Store, open_store
from tidal.sync import is_unchanged

log = logging.getLogger("tidal.pipeline")


def fingerprint(chunking: ChunkingOptions, embedder: Embedder) -> str:
    """Everything besides a file's bytes that decides its chunks and vectors.

    A change here re-ingests every file: a stored vector is only reused when it came out of
    exactly the same parser, chunker and model.
    """
    recipe = {
        "parser": PARSER_VERSION,
        "chunker": CHUNKER_VERSION,
        "encoding": ENCODING,
        "max_tokens": chunking.max_tokens,
        "overlap": chunking.overlap,
        "embedder": embedder.name,
        "dimension": embedder.dimension,
        "max_input_tokens": embedder.max_input_tokens,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


class Pipeline:
    """A source, an embedder and a store, with the chunking options that join them."""

    def __init__(
        self,
        *,
        source: Source,
        embedder: Embedder,
        store: Store,
        chunking: ChunkingOptions,
        batch_size: int = 64,
    ) -> None:
        self.source = source
        self.embedder = embedder
        self.store = store
        self.chunking = chunking
        self.batch_size = batch_size
        self.fingerprint = fingerprint(chunking, embedder)

    def ingest(self, file: SourceFile, *, attempt: int = 1) -> FileResult:
        """Bring the store up to date with ``file``; skip it when it already is.

        The file is claimed first, so two runs or two workers never work on it at once: the
        second waits, then finds it current and skips it. Writing happens last and in one
        transaction ("be pessimistic"): a crash at any earlier point leaves the old version.

        Raises only TidalError: anything else that escapes the stages came from this file's
        bytes (or a bug they reach), so it is re-raised as the file's error, named by type.
        That is how a run tells a file's failure from the orchestrator's own.
        """
        try:
            try:
                return self._ingest(file, attempt)
            except ClaimLost as exc:
                # Another run took the file over while this one's presence was gone (a
                # restart, a failover): nothing was written, and the vectors bought so far
                # were kept. Start over once; the new claim waits for the other run.
                log.warning("%s: %s; starting the file over", file.path, exc.message)
                return self._ingest(file, attempt)
        except TidalError:
            raise
        except Exception as exc:
            error = TransientError if is_transient(exc) else PermanentError
            raise error(f"{type(exc).__name__}: {exc}", path=file.path) from exc

    def _ingest(self, file: SourceFile, attempt: int) -> FileResult:
        started = time.perf_counter()
        with self.store.claim(file.path):
            if is_unchanged(file, self.store.current_files(self.fingerprint, [file.path])):
                return FileResult(
                    file.path, "skipped", seconds=time.perf_counter() - started, attempts=attempt
                )
            data = self.source.read(file)
            read_as = self.source.version_of(file, data)
            if read_as != file.content_hash:  # the index records what it holds, not the listing
                log.info("%s changed since it was listed: indexing the version read", file.path)
                file = replace(file, content_hash=read_as, size=len(data))
            ignored: str | None = None
            try:
                document = parse(file.path, data)
                chunks = self.chunk(document)
            except NothingToIndex as exc:
                # In sync with the source as no chunks: skipped while unchanged, and a
                # document emptied in the source leaves nothing stale in the index.
                document, chunks, ignored = (
                    Document(file.path, file.kind, "", file.path),
                    [],
                    exc.message,
                )
            vectors, reused = self.vectors(chunks)
            self.store.replace_file(
                file,
                document,
                [EmbeddedChunk(c, v) for c, v in zip(chunks, vectors, strict=True)],
                fingerprint=self.fingerprint,
                embedder=self.embedder.name,
                attempts=attempt,
            )
        if ignored is not None:
            return FileResult(
                file.path,
                "ignored",
                seconds=time.perf_counter() - started,
                attempts=attempt,
                error=ignored,
            )
        return FileResult(
            file.path,
            "ingested",
            chunks=len(chunks),
            tokens=sum(c.token_count for c in chunks),
            reused=reused,
            seconds=time.perf_counter() - started,
            attempts=attempt,
        )

    def vectors(self, chunks: Sequence[Chunk]) -> tuple[list[Vector], int]:
        """A vector per chunk, embedding only texts this model has not embedded before.

        The stored rows are the cache, keyed by (chunk hash, embedder name; the name carries the
        dimensions): editing one section of a long PRD sends only that section's chunks out.
        Each batch bought is kept in the store at once (``keep_embeddings``), so a crash or a
        retry of this file pays again only for the batch in flight.
        Returns the vectors and how many came from the cache.
        """
        cached, missing = self._lookup(chunks)
        fresh: dict[str, Vector] = {}
        hashes = list(missing)
        for start in range(0, len(hashes), self.batch_size):
            batch = hashes[start : start + self.batch_size]
            texts = [missing[h] for h in batch]
            # Rows of one float32 array: the embedder's float lists are dropped batch by batch.
            embedded = np.asarray(self.embedder.embed(texts), dtype=np.float32)
            bought = dict(zip(batch, embedded, strict=True))
            self.store.keep_embeddings(bought, self.embedder.name)
            fresh.update(bought)
        vectors = [cached[c.hash] if c.hash in cached else fresh[c.hash] for c in chunks]
        return vectors, sum(1 for c in chunks if c.hash in cached)

    def pending(self, chunks: Sequence[Chunk]) -> list[str]:
        """The texts that ``vectors`` would send to the embedder (for a dry run)."""
        return list(self._lookup(chunks)[1].values())

    def _lookup(self, chunks: Sequence[Chunk]) -> tuple[dict[str, Vector], dict[str, str]]:
        """Cached vectors by chunk hash, and the distinct texts still to embed, by hash."""
        cached = self.store.cached_embeddings([c.hash for c in chunks], self.embedder.name)
        return cached, {c.hash: c.embed_text for c in chunks if c.hash not in cached}

    def chunk(self, document: Document) -> list[Chunk]:
        """Token windows in their context, each fitting the embedder's input limit (re-split
        where it would not)."""
        place = partial(
            in_context, outline=Outline(document.text, document.title), title=document.title
        )
        chunks = _fit(place(chunk_text(document.text, self.chunking)), self.embedder, place)
        return [replace(c, index=i) for i, c in enumerate(chunks)]

    def close(self) -> None:
        try:
            self.source.close()
        finally:
            self.store.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fit(
    chunks: list[Chunk], embedder: Embedder, place: Callable[[list[Chunk]], list[Chunk]]
) -> list[Chunk]:
    """Split any chunk the embedder would truncate, so no text is silently dropped.

    The chunker counts cl100k tokens; the model counts its own, and dense text (IDs, numbers,
    code) can need more of them. Rather than trust a ratio, measure what is embedded (context
    included) and re-split.
    """
    if not chunks:
        return chunks
    limit = embedder.max_input_tokens
    fitted: list[Chunk] = []
    texts = [c.embed_text for c in chunks]
    for chunk, used in zip(chunks, embedder.count_tokens(texts), strict=True):
        if used <= limit or chunk.token_count <= 16:
            fitted.append(chunk)
            continue
        smaller = max(16, chunk.token_count * limit * 9 // (used * 10))
        log.debug(
            "re-splitting a %d-token chunk for the embedder (%d > %d)",
            chunk.token_count,
            used,
            limit,
        )
        pieces = chunk_text(chunk.text, ChunkingOptions(smaller, 0))
        pieces = [replace(p, start=chunk.start + p.start) for p in pieces]
        fitted.extend(_fit(place(pieces), embedder, place))
    return fitted


def chunking_options(settings: Settings) -> ChunkingOptions:
    return ChunkingOptions(settings.effective_chunk_tokens, settings.effective_chunk_overlap)


def build_pipeline(settings: Settings, *, embedder: Embedder | None = None) -> Pipeline:
    """Open every backend the settings name. Slow (loads the model): ``tidal.runtime`` does it
    once per process; pass ``embedder`` to share a loaded model."""
    source = open_source(settings)
    embedder = embedder or open_embedder(settings)
    # Files in flight share the pool a statement at a time (PostgresStore's claims hold no
    # connection); the store opens one more connection of its own, its presence.
    store = open_store(
        settings, dimension=embedder.dimension, pool_size=settings.database_connections - 1
    )
    return Pipeline(
        source=source,
        embedder=embedder,
        store=store,
        chunking=chunking_options(settings),
        batch_size=settings.embed_batch_size,
    )
