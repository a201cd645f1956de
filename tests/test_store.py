"""What only the Postgres store has, on a real Postgres 16 + pgvector (pgserver): its schema,
the HNSW index around bulk writes, row ids, claims across processes and their presence.

What every Store does is tested on this backend too, in tests/test_store_contract.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psycopg
import pytest

from tests.test_store_contract import _claim_in_thread
from tidal.chunking import chunk_hash
from tidal.errors import ConfigError
from tidal.records import Chunk, Document, EmbeddedChunk, SourceFile
from tidal.store.postgres import PostgresStore

DIM = 8
FP = "fingerprint-a"
EMB = "test:model"


def _file(path: str = "prds/a.md", version: str = "v1") -> SourceFile:
    return SourceFile(path=path, size=10, content_hash=version)


def _doc(path: str = "prds/a.md") -> Document:
    return Document(path=path, kind="prd", text="x", title="A")


def _chunks(n: int, tag: str = "") -> list[EmbeddedChunk]:
    out = []
    for i in range(n):
        text = f"chunk {i} {tag}"
        vector = [0.0] * DIM
        vector[i % DIM] = 1.0
        out.append(EmbeddedChunk(Chunk(i, text, 3, chunk_hash(text)), vector))
    return out


@pytest.fixture
def store(database_url: str):
    s = PostgresStore(database_url, dimension=DIM)
    yield s
    s.close()


def _rows(url: str, path: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select chunk_index, content, metadata->>'type' from documents"
            " where source_path = %s order by chunk_index",
            (path,),
        ).fetchall()


def test_schema_is_idempotent_and_public_names_exist(database_url: str) -> None:
    PostgresStore(database_url, dimension=DIM).close()
    PostgresStore(
        database_url, dimension=DIM
    ).close()  # second set-up changes nothing, raises nothing
    with psycopg.connect(database_url) as conn:
        tables = {
            r[0] for r in conn.execute("select tablename from pg_tables where schemaname='public'")
        }
        columns = {
            r[0]
            for r in conn.execute(
                "select column_name from information_schema.columns where table_name = 'documents'"
            )
        }
        functions = {
            r[0]
            for r in conn.execute(
                "select proname from pg_proc where proname in ('match_documents', 'hybrid_search')"
            )
        }
    assert {"documents", "ingested_files"} <= tables
    assert {
        "id",
        "content",
        "metadata",
        "embedding",
        "source_path",
        "chunk_index",
        "chunk_hash",
        "fts",
    } <= columns
    assert functions == {"match_documents", "hybrid_search"}


def test_a_table_built_for_another_dimension_is_a_clear_error(database_url: str) -> None:
    PostgresStore(database_url, dimension=DIM).close()
    with pytest.raises(ConfigError, match="8-dimension vectors but the embedder makes 16"):
        PostgresStore(database_url, dimension=16)


def test_two_models_setting_up_one_empty_database_at_once_one_wins_one_is_told(
    database_url: str,
) -> None:
    """The schema lock serialises set-up, and the loser reads the width after it: never two
    tables, never a silent mix of widths."""
    start = threading.Barrier(4)
    outcomes: dict[int, object] = {}

    def open_with(dimension: int, key: int) -> None:
        start.wait()
        try:
            PostgresStore(database_url, dimension=dimension).close()
            outcomes[key] = dimension
        except ConfigError as exc:
            outcomes[key] = exc

    threads = [
        threading.Thread(target=open_with, args=(dim, i))
        for i, dim in enumerate((DIM, 16, DIM, 16))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with psycopg.connect(database_url) as conn:
        (width,) = conn.execute(
            "select atttypmod from pg_attribute"
            " where attrelid = 'documents'::regclass and attname = 'embedding'"
        ).fetchone()
    assert len(outcomes) == 4
    assert sorted(o for o in outcomes.values() if isinstance(o, int)) == [width, width]
    errors = [o for o in outcomes.values() if isinstance(o, ConfigError)]
    assert len(errors) == 2
    assert all(f"{width}-dimension vectors but the embedder makes" in str(e) for e in errors)


def test_chunk_ids_are_deterministic(store: PostgresStore, database_url: str) -> None:
    store.replace_file(_file(), _doc(), _chunks(3), fingerprint=FP, embedder=EMB)
    with psycopg.connect(database_url) as conn:
        first = [r[0] for r in conn.execute("select id from documents order by chunk_index")]
    store.replace_file(_file(version="again"), _doc(), _chunks(3), fingerprint=FP, embedder=EMB)
    with psycopg.connect(database_url) as conn:
        second = [r[0] for r in conn.execute("select id from documents order by chunk_index")]
    assert first == second


def _vector_index(url: str) -> str | None:
    """The access method of documents_embedding_idx, or None when there is none."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select am.amname from pg_class c join pg_am am on am.oid = c.relam"
            " where c.relname = 'documents_embedding_idx'"
        ).fetchone()
    return row[0] if row else None


def test_opening_a_store_never_builds_the_vector_index_the_run_does(
    store: PostgresStore, database_url: str
) -> None:
    assert _vector_index(database_url) is None  # set-up leaves it to the run
    store.replace_file(_file(), _doc(), _chunks(5), fingerprint=FP, embedder=EMB)

    store.build_vector_index()
    store.build_vector_index()  # already there: nothing to do

    assert _vector_index(database_url) == "hnsw"
    PostgresStore(database_url, dimension=DIM).close()  # another process opening the store
    assert _vector_index(database_url) == "hnsw"


def test_a_bulk_load_writes_without_the_index_and_search_still_answers(
    store: PostgresStore, database_url: str
) -> None:
    store.build_vector_index()
    store.suspend_vector_index()
    assert _vector_index(database_url) is None
    store.replace_file(_file(), _doc(), _chunks(5, "bulk"), fingerprint=FP, embedder=EMB)

    query = [0.0] * DIM
    query[2] = 1.0
    assert [h.chunk_index for h in store.search(query, limit=1)] == [2]  # a scan, exact

    store.build_vector_index()
    assert _vector_index(database_url) == "hnsw"
    with psycopg.connect(database_url) as conn:
        conn.execute("set enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "explain select id from documents order by embedding <=> %s::vector limit 1",
                (str(query),),
            )
        )
    assert "documents_embedding_idx" in plan


def test_an_index_build_past_tidal_index_memory_mb_says_so_and_still_builds(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past its memory pgvector builds the graph on disk, many times slower (at 100,000 files
    of 1,536 dimensions, tens of minutes): the run says which setting to raise."""
    from tidal.settings import load_settings
    from tidal.store import open_store
    from tidal.store.postgres.vector_index import needed_mb

    rows = 1600
    assert needed_mb(rows, DIM) > 64  # over the smallest setting, under the default

    def build(memory_mb: int) -> list[str]:
        monkeypatch.setenv("TIDAL_INDEX_MEMORY_MB", str(memory_mb))
        store = open_store(load_settings(database_url=database_url), dimension=DIM)
        try:
            assert store.index_memory_mb == memory_mb
            store.suspend_vector_index()
            caplog.clear()
            with caplog.at_level("WARNING", logger="tidal.store"):
                store.build_vector_index()
            assert _vector_index(database_url) == "hnsw"
            return [
                r.getMessage() for r in caplog.records if "TIDAL_INDEX_MEMORY_MB" in r.getMessage()
            ]
        finally:
            store.close()

    setup = PostgresStore(database_url, dimension=DIM)
    setup.replace_file(_file(), _doc(), _chunks(rows), fingerprint=FP, embedder=EMB)
    setup.close()
    [said] = build(64)
    assert f"over {rows} chunks" in said and "TIDAL_INDEX_MEMORY_MB=64" in said
    assert build(512) == []


def test_a_write_big_against_the_index_drops_it_and_a_small_one_keeps_it(
    database_url: str,
) -> None:
    """Past an eighth of the indexed rows (and ``big_write_rows``), a file's chunks are written
    without the vector index, which the run's end builds again: inserting them into the live
    graph cost minutes inside the write's transaction."""
    store = PostgresStore(database_url, dimension=DIM, pool_size=2)
    try:
        store.build_vector_index()
        for i in range(10):
            path = f"prds/kept-{i}.md"
            store.replace_file(_file(path), _doc(path), _chunks(10, path), fingerprint=FP,
                               embedder=EMB)  # fmt: skip
        assert _vector_index(database_url) == "hnsw"  # under the default threshold
        store.big_write_rows = 10

        store.replace_file(_file("prds/mid.md"), _doc("prds/mid.md"), _chunks(11, "mid"),
                           fingerprint=FP, embedder=EMB)  # fmt: skip
        assert _vector_index(database_url) == "hnsw"  # 11 rows against 100 indexed: kept

        store.replace_file(_file("prds/big.md"), _doc("prds/big.md"), _chunks(20, "big"),
                           fingerprint=FP, embedder=EMB)  # fmt: skip
        assert _vector_index(database_url) is None  # 20 x 8 >= 111 indexed: dropped
        assert len(_rows(database_url, "prds/big.md")) == 20
        store.build_vector_index()  # as the run's end does
        assert _vector_index(database_url) == "hnsw"
    finally:
        store.close()


def test_runs_finishing_at_once_build_the_vector_index_once(database_url: str) -> None:
    """Two runs that end together both find the index missing after a bulk load. ``create
    index if not exists`` alone is not safe against that: the second insert into the
    catalogue fails on its unique key. The build is serialised, and the later run finds the
    index there."""
    stores = [PostgresStore(database_url, dimension=DIM) for _ in range(4)]
    for i in range(8):
        stores[0].replace_file(
            _file(f"prds/{i}.md"),
            _doc(f"prds/{i}.md"),
            _chunks(400, str(i)),
            fingerprint=FP,
            embedder=EMB,
        )
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def finish(store: PostgresStore) -> None:
        start.wait()
        try:
            store.build_vector_index()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert errors == []
    assert _vector_index(database_url) == "hnsw"


def test_kept_vectors_nobody_claimed_for_a_week_are_forgotten(
    store: PostgresStore, database_url: str
) -> None:
    vector = [1.0] + [0.0] * (DIM - 1)
    store.keep_embeddings({"old-hash": vector, "new-hash": vector}, EMB)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update embedding_cache set created_at = now() - interval '8 days'"
            " where chunk_hash = 'old-hash'"
        )

    assert store.forget_kept_embeddings(7) == 1

    assert set(store.cached_embeddings(["old-hash", "new-hash"], EMB)) == {"new-hash"}


def test_opening_a_store_on_a_current_schema_waits_for_no_file_in_flight(
    database_url: str,
) -> None:
    """A worker or a second run joining a busy index: schema.sql's ``alter table`` would wait
    for every open transaction that read the tables, and hold up every statement after it."""
    PostgresStore(database_url, dimension=DIM).close()  # the schema, applied once
    opened: list[PostgresStore] = []
    with psycopg.connect(database_url) as busy:
        for table in ("documents", "ingested_files", "embedding_cache", "ingest_runs"):
            busy.execute(f"select count(*) from {table}")  # held until the transaction ends
        joining = threading.Thread(
            target=lambda: opened.append(PostgresStore(database_url, dimension=DIM)), daemon=True
        )
        joining.start()
        joining.join(timeout=15)
        try:
            assert opened, "opening the store waited for a transaction that read the tables"
        finally:
            busy.rollback()
            joining.join(timeout=30)
            for store in opened:
                store.close()


def test_a_changed_schema_is_applied_again(database_url: str) -> None:
    PostgresStore(database_url, dimension=DIM).close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("comment on table ingest_runs is 'tidal schema from an older release'")
        conn.execute("drop function match_documents")
    PostgresStore(database_url, dimension=DIM).close()
    with psycopg.connect(database_url) as conn:
        marker = conn.execute("select obj_description('ingest_runs'::regclass)").fetchone()[0]
        restored = conn.execute("select to_regproc('match_documents')").fetchone()[0]
    assert marker.startswith("tidal schema ") and "older" not in marker
    assert restored is not None


def test_the_previous_releases_hybrid_search_is_replaced_not_overloaded(database_url: str) -> None:
    """The last release's ``hybrid_search`` had eight arguments; this one adds
    ``full_text_min_share`` with a default. Left beside it, a call with eight arguments would
    match both: opening a store leaves one."""
    store = PostgresStore(database_url, dimension=DIM)
    store.replace_file(_file(), _doc(), _chunks(2, "ticket ST-5"), fingerprint=FP, embedder=EMB)
    store.close()
    with psycopg.connect(database_url, autocommit=True) as conn:  # back to the last release
        conn.execute("drop function hybrid_search")
        conn.execute(
            f"create function hybrid_search(query_text text, query_embedding vector({DIM}),"
            " match_count integer, full_text_weight float default 1,"
            " semantic_weight float default 1, rrf_k integer default 50,"
            " filter jsonb default '{}', path_prefix text default null)"
            " returns table (id uuid, content text, metadata jsonb, similarity float,"
            " text_rank float, score float) language sql stable as $$ select null::uuid,"
            " null, null::jsonb, 0::float, 0::float, 0::float where false $$"
        )
        conn.execute("comment on table ingest_runs is 'tidal schema from the last release'")

    store = PostgresStore(database_url, dimension=DIM)
    try:
        with psycopg.connect(database_url) as conn:
            signatures = conn.execute(
                "select pg_get_function_identity_arguments(oid) from pg_proc"
                " where proname = 'hybrid_search'"
            ).fetchall()
            rows = conn.execute(
                "select metadata->>'chunk_index' from"
                " hybrid_search('ST-5', null, 5, 1, 1, 50, '{}', null)"
            ).fetchall()
    finally:
        store.close()
    assert len(signatures) == 1 and signatures[0][0].endswith(
        "full_text_min_share double precision"
    )
    assert sorted(r[0] for r in rows) == ["0", "1"]


def test_an_index_of_the_previous_release_gains_full_text_and_the_new_searches_in_place(
    database_url: str,
) -> None:
    """A database set up before hybrid search: no ``fts`` column, ``match_documents`` with three
    arguments. Opening a store adds the column (filled for the rows already there) and its
    index, and leaves one ``match_documents``, so ``match_documents(q, 5)`` is not ambiguous."""
    store = PostgresStore(database_url, dimension=DIM)
    store.replace_file(_file(), _doc(), _chunks(2, "ticket ST-5"), fingerprint=FP, embedder=EMB)
    store.close()
    with psycopg.connect(database_url, autocommit=True) as conn:  # back to the last release
        conn.execute("drop function hybrid_search")
        conn.execute("drop function match_documents")
        conn.execute("alter table documents drop column fts")
        conn.execute(
            f"create function match_documents(query_embedding vector({DIM}),"
            " match_count integer default null, filter jsonb default '{}')"
            " returns table (id uuid, content text, metadata jsonb, similarity float)"
            " language sql stable as $$ select d.id, d.content, d.metadata,"
            " 1 - (d.embedding <=> query_embedding) from documents d"
            " where d.metadata @> filter order by d.embedding <=> query_embedding"
            " limit match_count $$"
        )
        conn.execute("comment on table ingest_runs is 'tidal schema from the last release'")

    store = PostgresStore(database_url, dimension=DIM)
    try:
        found = store.hybrid_search("ST-5", None, limit=5)
        with psycopg.connect(database_url) as conn:
            signatures = conn.execute(
                "select pg_get_function_identity_arguments(oid) from pg_proc"
                " where proname = 'match_documents'"
            ).fetchall()
            (nearest,) = conn.execute(
                f"select count(*) from match_documents('[{','.join(['1'] * DIM)}]', 5)"
            ).fetchone()
    finally:
        store.close()
    assert sorted(h.chunk_index for h in found) == [0, 1]
    assert signatures == [
        ("query_embedding vector, match_count integer, filter jsonb, path_prefix text",)
    ]
    assert nearest == 2


def test_files_in_flight_hold_no_connection(database_url: str) -> None:
    """Claims are rows, not held transactions: 12 files held at once by a store whose pool
    has 2 connections, with the presence connection the store's only other one."""
    store = PostgresStore(database_url, dimension=DIM, pool_size=2)
    try:
        held = [_claim_in_thread(store, f"prds/{i}.md") for i in range(12)]
        assert all(got.wait(15) for got, _ in held)
        with psycopg.connect(database_url) as conn:
            claims = conn.execute("select count(*) from file_claims").fetchone()[0]
            (connections,) = conn.execute(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and backend_type = 'client backend' and pid <> pg_backend_pid()"
            ).fetchone()
        assert claims == 12
        assert connections <= 3
        for _, release in held:
            release.set()
    finally:
        store.close()


HOLD_AND_WAIT = """
import sys, time
from tidal.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1], dimension=8)
with store.claim("prds/a.md"):
    print("held", flush=True)
    time.sleep(600)
"""


def _refused(store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once a claim of ``store``'s has found its file another's three times: proof that
    it tried and was turned away, where a second's wait only shows it did not get through."""
    refused, refusals = threading.Event(), []
    take = store._claims._take

    def counted(path: str) -> bool:
        taken = take(path)
        if not taken:
            refusals.append(path)
            if len(refusals) >= 3:
                refused.set()
        return taken

    monkeypatch.setattr(store._claims, "_take", counted)
    return refused


def test_a_killed_holders_files_are_free_at_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL leaves the claim's row behind, but its holder's presence lock goes with the
    process: the next claim takes the file over without waiting for any timeout."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_WAIT, database_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        store = PostgresStore(database_url, dimension=DIM)
        try:
            refused = _refused(store, monkeypatch)
            got, release = _claim_in_thread(store, "prds/a.md")
            assert refused.wait(10) and not got.is_set()  # alive: it holds the file
            holder.kill()
            holder.wait(10)
            assert got.wait(5)  # gone: the row left behind is taken over
            with psycopg.connect(database_url) as conn:
                [(owner,)] = conn.execute("select holder from file_claims").fetchall()
            assert owner == store.holder
            release.set()
        finally:
            store.close()
    finally:
        holder.kill()
        holder.wait(10)


def test_a_dropped_presence_connection_comes_back_and_holds_the_files_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresStore(database_url, dimension=DIM, presence_ping_seconds=0.2)
    other = PostgresStore(database_url, dimension=DIM)
    try:
        got, release = _claim_in_thread(store, "prds/a.md")
        assert got.wait(10)
        with psycopg.connect(database_url, autocommit=True) as conn:
            query = "select pid from pg_locks where locktype = 'advisory' and granted"
            [(cut,)] = conn.execute(query).fetchall()
            conn.execute("select pg_terminate_backend(%s)", (cut,))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pids = [pid for (pid,) in conn.execute(query).fetchall()]
                if pids and pids != [cut]:
                    break
                time.sleep(0.05)
        assert pids and cut not in pids  # present again, on a new connection
        refused = _refused(other, monkeypatch)
        taken, let_go = _claim_in_thread(other, "prds/a.md")
        assert refused.wait(10) and not taken.is_set()  # so the file is still its own
        release.set()
        assert taken.wait(10)
        let_go.set()
    finally:
        store.close()
        other.close()


def test_the_cli_reads_the_configured_index_through_tidal_store(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tidal status``, ``tidal failed`` and ``tidal db sql`` read the index through
    ``tidal.store`` alone, with no store set up and no model loaded; every source's files."""
    import tidal.store
    from tidal.settings import load_settings
    from tidal.store.postgres import schema_sql

    monkeypatch.setenv("TIDAL_DATABASE_URL", database_url)
    settings = load_settings()
    assert tidal.store.index_status(settings) is None  # Tidal never ran there
    assert tidal.store.failed_files(settings) == []
    for source in ("supabase://knowledge", "/srv/notes"):
        store = PostgresStore(database_url, dimension=DIM, source=source)
        store.replace_file(_file(), _doc(), _chunks(2), fingerprint=FP, embedder=EMB)
        store.record_failure(
            "prds/b.md", "v1", fingerprint=FP, error="bad", kind="permanent", attempts=1
        )
        store.close()

    status = tidal.store.index_status(settings)
    assert status is not None and (status.files, status.chunks, status.failed) == (2, 4, 2)
    assert [f.path for f in tidal.store.failed_files(settings)] == ["prds/b.md", "prds/b.md"]
    assert tidal.store.schema_sql(DIM) == schema_sql(DIM)
