"""Vectors are kept as each batch is bought, in the real Postgres store: a retried or crashed
file pays again only for the batch that was in flight, and the holding table empties as files
are written."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import pytest

from tidal.chunking import ChunkingOptions
from tidal.embedders.hashing import HashEmbedder
from tidal.errors import TransientError
from tidal.pipeline import Pipeline
from tidal.records import SourceFile
from tidal.sources.memory import MemorySource
from tidal.store.postgres import PostgresStore

TEXT = "\n\n".join(f"## Section {i}\n\n" + f"Section {i} says something. " * 30 for i in range(8))


class _FailsOnce(HashEmbedder):
    """Fails the ``fail_at``-th batch it is asked for, once; remembers every text asked."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(dimension=8)
        self.fail_at = fail_at
        self.asked: list[str] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if len(self.calls) + 1 == self.fail_at:
            self.fail_at = 0
            self.calls.append([])
            raise TransientError("OpenAI server error (HTTP 500)")
        self.asked.extend(texts)
        return super().embed(texts)


@pytest.fixture
def store(database_url: str):  # type: ignore[no-untyped-def]
    s = PostgresStore(database_url, dimension=8)
    yield s
    s.close()


def _held(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from embedding_cache").fetchone()[0]


def test_a_retried_file_rebuys_only_the_batch_that_failed(
    store: PostgresStore, database_url: str
) -> None:
    embedder = _FailsOnce(fail_at=3)
    source = MemorySource({"prds/long.md": TEXT.encode()})
    pipeline = Pipeline(
        source=source,
        embedder=embedder,
        store=store,
        chunking=ChunkingOptions(64, 8),
        batch_size=4,
    )
    [file] = list(source.list())
    chunks = pipeline.chunk(pipeline_document(pipeline, file))
    assert len(chunks) > 12  # several batches of 4

    with pytest.raises(TransientError):
        pipeline.ingest(file)
    assert _held(database_url) == 8  # the two batches bought before the failure, kept

    result = pipeline.ingest(file, attempt=2)
    assert result.status == "ingested" and result.reused >= 8  # the kept ones were reused
    assert sorted(embedder.asked) == sorted({c.embed_text for c in chunks})  # each bought once
    assert _held(database_url) == 0  # written with its file, no longer held


def pipeline_document(pipeline: Pipeline, file: SourceFile):  # type: ignore[no-untyped-def]
    from tidal.parsing import parse

    return parse(file.path, pipeline.source.read(file))


class _TakesTheFileOver(HashEmbedder):
    """At the first batch, cuts its store's presence connection (as a restart or a failover
    would) and has another store ingest the same file, which takes the claim over."""

    def __init__(self, url: str, other: Pipeline, file: SourceFile) -> None:
        super().__init__(dimension=8)
        self.url = url
        self.other = other
        self.file = file
        self.asked: list[str] = []
        self.cut: list[int] = []
        self.other_result: list[str] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.asked.extend(texts)
        if not self.cut:
            with psycopg.connect(self.url, autocommit=True) as conn:
                # Between statements no file holds a lock: the one advisory lock held is the
                # store's presence.
                [pid] = conn.execute(
                    "select pid from pg_locks where locktype = 'advisory' and granted"
                ).fetchone()
                conn.execute("select pg_terminate_backend(%s)", (pid,))
            self.cut.append(pid)
            self.other_result.append(self.other.ingest(self.file).status)
        return super().embed(texts)


def test_a_file_taken_over_mid_file_writes_nothing_starts_over_and_lands_once(
    database_url: str,
) -> None:
    """A store that looks gone (its presence connection dropped) loses its files to the next
    claim; its own write then finds the claim gone and writes nothing, and the file, started
    over, is found current: stored once, by the store that took it over."""
    source = MemorySource({"prds/long.md": TEXT.encode(), "prds/other.md": b"# Other\n\nText."})
    files = {f.path: f for f in source.list()}
    # A keeper that never pings: the cut presence stays cut for the whole file.
    first = PostgresStore(database_url, dimension=8, presence_ping_seconds=3600)
    second = PostgresStore(database_url, dimension=8)
    other_embedder = HashEmbedder(dimension=8)
    other = Pipeline(
        source=source, embedder=other_embedder, store=second, chunking=ChunkingOptions(64, 8)
    )
    embedder = _TakesTheFileOver(database_url, other, files["prds/long.md"])
    pipeline = Pipeline(
        source=source, embedder=embedder, store=first, chunking=ChunkingOptions(64, 8), batch_size=4
    )
    try:
        result = pipeline.ingest(files["prds/long.md"])

        assert embedder.cut  # the presence's backend really was terminated mid-file
        assert embedder.other_result == ["ingested"]  # the other store took the claim over
        assert result.status == "skipped" and result.attempts == 1  # refused, then current
        chunks = pipeline.chunk(pipeline_document(pipeline, files["prds/long.md"]))
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "select chunk_index from documents where source_path = 'prds/long.md'"
                " order by chunk_index"
            ).fetchall()
            claims = conn.execute("select count(*) from file_claims").fetchone()[0]
        assert [r[0] for r in rows] == list(range(len(chunks)))  # once, not twice
        assert claims == 0
        assert pipeline.ingest(files["prds/other.md"]).status == "ingested"  # back at work
    finally:
        first.close()
        second.close()
