"""Several sources in one index: a file is its source and its path, so two buckets, or a bucket
and a folder, share an index, and each run deletes only what its own source no longer lists.
An index made before files knew their source is migrated in place.

Real Postgres with pgvector, the fake Storage server through the real ``supabase`` client, a real
folder; the hashing embedder (what is embedded is not the question).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.fakes.storage_server import FakeStorage
from tests.flowkit import counts
from tidal.chunking import ChunkingOptions
from tidal.embedders.hashing import HashEmbedder
from tidal.pipeline import Pipeline
from tidal.run import IngestRun, run_in_threads
from tidal.sources import Source
from tidal.sources.local import LocalSource
from tidal.sources.supabase import SupabaseSource
from tidal.store.postgres import PostgresStore

KEY = "service-role-key-of-many-sources"
DIM = HashEmbedder().dimension


def _run(source: Source, url: str, identity: str, **options):  # type: ignore[no-untyped-def]
    store = PostgresStore(url, dimension=DIM, source=identity)
    try:
        pipeline = Pipeline(
            source=source, embedder=HashEmbedder(), store=store, chunking=ChunkingOptions(64, 8)
        )
        return run_in_threads(IngestRun(pipeline, **options), concurrency=2)
    finally:
        store.close()


def _files(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        files = set(conn.execute("select source, path from ingested_files").fetchall())
        chunks = set(conn.execute("select distinct source, source_path from documents").fetchall())
    assert chunks == files  # every file's chunks are where its record is
    return files


def _put(fake: FakeStorage, bucket: str, paths: list[str]) -> None:
    for path in paths:
        fake.put(bucket, path, f"# {bucket} {path}\n\nWords of {bucket}.\n".encode())


def test_two_buckets_share_an_index_and_each_run_deletes_only_its_own(database_url: str) -> None:
    """The same paths in both buckets are two files each; one bucket's run, listing half its
    files, deletes its own half and none of the other bucket's."""
    paths = [f"prds/doc-{i}.md" for i in range(8)]
    with FakeStorage(service_key=KEY) as fake:
        _put(fake, "knowledge", paths)
        _put(fake, "single", paths[:2])
        with (
            SupabaseSource(fake.url, KEY, "knowledge") as knowledge,
            SupabaseSource(fake.url, KEY, "single", ["prds"]) as single,
        ):
            first = _run(knowledge, database_url, "supabase://knowledge")
            second = _run(single, database_url, "supabase://single")
            assert first.counts == counts(ingested=8) and second.counts == counts(ingested=2)
            assert second.deleted == () and second.deletion_refused is None
            for path in paths[4:]:
                fake.delete("knowledge", path)
            third = _run(knowledge, database_url, "supabase://knowledge")
            again = _run(single, database_url, "supabase://single")

    assert third.deleted == tuple(paths[4:]) and third.counts == counts(skipped=4)
    assert again.counts == counts(skipped=2) and again.deleted == ()
    assert _files(database_url) == {("supabase://knowledge", p) for p in paths[:4]} | {
        ("supabase://single", p) for p in paths[:2]
    }


def test_a_bucket_and_a_folder_share_an_index(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "prds").mkdir(parents=True)
    (folder / "prds/doc-0.md").write_text("# Folder doc\n\nFrom a folder.\n")
    (folder / "prds/local.md").write_text("# Local only\n\nOnly here.\n")
    identity = str(folder.resolve())
    with FakeStorage(service_key=KEY) as fake:
        _put(fake, "knowledge", ["prds/doc-0.md", "prds/doc-1.md"])
        with SupabaseSource(fake.url, KEY, "knowledge") as bucket:
            _run(bucket, database_url, "supabase://knowledge")
            local = _run(LocalSource(folder), database_url, identity)
            assert local.counts == counts(ingested=2) and local.deleted == ()
            fake.delete("knowledge", "prds/doc-0.md")
            remote = _run(bucket, database_url, "supabase://knowledge")
    assert remote.deleted == ("prds/doc-0.md",)
    assert _files(database_url) == {
        ("supabase://knowledge", "prds/doc-1.md"),
        (identity, "prds/doc-0.md"),
        (identity, "prds/local.md"),
    }


# --- an index made before files knew their source ---------------------------------------------

OLD_SCHEMA = """
create extension if not exists vector;
create table documents (
    id uuid primary key, content text not null, metadata jsonb not null default '{}'::jsonb,
    embedding vector(__DIM__) not null, source_path text not null, chunk_index integer not null,
    chunk_hash text not null, embedder text, unique (source_path, chunk_index)
);
create table ingested_files (
    path text primary key, content_hash text not null, fingerprint text not null,
    chunk_count integer not null default 0, token_count integer not null default 0,
    status text not null check (status in ('ingested', 'failed')), error text, error_kind text,
    attempts integer not null default 1, created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create table embedding_cache (
    chunk_hash text not null, embedder text not null, embedding vector(__DIM__) not null,
    created_at timestamptz not null default now(), primary key (chunk_hash, embedder)
);
create table file_claims (
    path text primary key, holder uuid not null, claimed_at timestamptz not null default now()
);
create table ingest_runs (
    id bigint generated always as identity primary key, started_at timestamptz not null,
    finished_at timestamptz not null, source text not null, outcome text not null,
    counts jsonb not null, chunks integer not null, tokens integer not null,
    deleted integer not null, seconds double precision not null, message text,
    flow_run_id text, flow_run_name text
);
"""


def _old_index(url: str, rows: dict[str, str], ledger: list[str]) -> None:
    """An index as the release before sources wrote it: ``rows`` path -> text, runs from
    ``ledger`` sources."""
    vector = "[" + ",".join(["0.1"] * DIM) + "]"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(OLD_SCHEMA.replace("__DIM__", str(DIM)))
        for i, (path, text) in enumerate(rows.items()):
            conn.execute(
                "insert into documents (id, content, metadata, embedding, source_path,"
                " chunk_index, chunk_hash, embedder) values (gen_random_uuid(), %s,"
                " jsonb_build_object('source_path', %s::text), %s::vector, %s, 0, %s, 'hash')",
                (text, path, vector, path, f"h{i}"),
            )
            conn.execute(
                "insert into ingested_files (path, content_hash, fingerprint, chunk_count,"
                " status) values (%s, 'old', 'old', 1, 'ingested')",
                (path,),
            )
        for source in ledger:
            conn.execute(
                "insert into ingest_runs (started_at, finished_at, source, outcome, counts,"
                " chunks, tokens, deleted, seconds) values (now(), now(), %s, 'completed',"
                " '{}', 0, 0, 0, 1)",
                (source,),
            )


def test_an_index_with_one_source_in_its_ledger_is_migrated_in_place(database_url: str) -> None:
    paths = [f"prds/doc-{i}.md" for i in range(4)]
    _old_index(database_url, dict.fromkeys(paths, "old text"), ["supabase://knowledge/prds"])
    with FakeStorage(service_key=KEY) as fake:
        _put(fake, "knowledge", paths[:3])
        with SupabaseSource(fake.url, KEY, "knowledge", ["prds"]) as bucket:
            summary = _run(bucket, database_url, "supabase://knowledge")
    assert summary.deleted == ("prds/doc-3.md",)  # its own file, gone from its bucket
    assert summary.counts == counts(ingested=3)  # the old fingerprint: re-ingested in place
    assert _files(database_url) == {("supabase://knowledge", p) for p in paths[:3]}


def test_an_index_with_two_sources_in_its_ledger_adopts_what_each_lists(
    database_url: str,
) -> None:
    """The ledger cannot say whose a file is: each source adopts the files it lists, and a
    run never deletes one it did not list, however many are unclaimed."""
    mine, theirs = ["prds/a.md", "prds/b.md"], ["prds/x.md", "prds/y.md", "prds/z.md"]
    _old_index(
        database_url,
        dict.fromkeys(mine + theirs, "old text"),
        ["supabase://knowledge", "supabase://other"],
    )
    with FakeStorage(service_key=KEY) as fake:
        _put(fake, "knowledge", mine)
        with SupabaseSource(fake.url, KEY, "knowledge") as bucket:
            summary = _run(bucket, database_url, "supabase://knowledge")
    assert summary.deleted == () and summary.deletion_refused is None
    assert summary.counts == counts(ingested=2)
    assert _files(database_url) == {("supabase://knowledge", p) for p in mine} | {
        ("", p) for p in theirs
    }


@pytest.mark.parametrize("ledger", [[], ["supabase://knowledge"]])
def test_the_migration_keeps_every_row_and_is_idempotent(
    database_url: str, ledger: list[str]
) -> None:
    _old_index(database_url, {"prds/a.md": "a", "prds/b.md": "b"}, ledger)
    for _ in range(2):
        PostgresStore(database_url, dimension=DIM, source="supabase://knowledge").close()
    with psycopg.connect(database_url) as conn:
        (documents,) = conn.execute("select count(*) from documents").fetchone()
        owners = {r[0] for r in conn.execute("select source from ingested_files")}
    assert documents == 2
    assert owners == ({"supabase://knowledge"} if ledger else {""})
