"""The index holds what the source holds: the version it records is the one it read, a file
unreadable for a moment is tried again, an empty document is no failure, and every run that
started is in the ledger.

Real Postgres with pgvector (the session's server, a fresh database per test), a real folder
or the fake Storage server through the real ``supabase`` client; the hashing embedder, since
what is embedded is not the question here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fakes.storage_server import FakeStorage
from tests.flowkit import counts
from tidal.chunking import ChunkingOptions
from tidal.embedders.hashing import HashEmbedder
from tidal.pipeline import Pipeline
from tidal.records import SourceFile
from tidal.run import IngestRun, run_in_threads
from tidal.sources import Source
from tidal.sources.local import LocalSource
from tidal.sources.supabase import SupabaseSource
from tidal.store.postgres import PostgresStore, index_status

SERVICE_KEY = "service-role-key-of-the-index-truth"


@pytest.fixture
def store(database_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(database_url, dimension=HashEmbedder().dimension)
    yield store
    store.close()


def _pipeline(source: Source, store: PostgresStore) -> Pipeline:
    return Pipeline(
        source=source, embedder=HashEmbedder(), store=store, chunking=ChunkingOptions(64, 8)
    )


def _stored(url: str) -> dict[str, tuple[str, str]]:
    """path -> (recorded content hash, the text of its chunks)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select f.path, f.content_hash, coalesce(string_agg(d.content, '' order by"
            " d.chunk_index), '') from ingested_files f left join documents d"
            " on d.source_path = f.path group by 1, 2"
        ).fetchall()
    return {path: (key, text) for path, key, text in rows}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Between:
    """A Source wrapper that does something once, between a file's listing and its read."""

    def __init__(self, source: Source, path: str, act) -> None:  # type: ignore[no-untyped-def]
        self._source, self._path, self._act = source, path, act

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._source, name)

    def read(self, file: SourceFile) -> bytes:
        if file.path == self._path and self._act is not None:
            act, self._act = self._act, None
            act()
        return self._source.read(file)


# --- 5. the version recorded is the version read ----------------------------------------------


def test_a_file_changed_after_listing_is_recorded_under_the_hash_of_what_was_read(
    tmp_path: Path, store: PostgresStore, database_url: str
) -> None:
    """Listed as A, changed to B before its read: the index holds B under B's hash. Changed
    back to A, the next run sees a change and re-ingests it (it used to skip it for ever,
    holding B's text under A's hash)."""
    folder = tmp_path / "corpus"
    (folder / "prds").mkdir(parents=True)
    doc = folder / "prds/plan.md"
    first, middle = b"# Plan\n\nThe first version.\n", b"# Plan\n\nThe middle version.\n"
    doc.write_bytes(first)
    source = _Between(LocalSource(folder), "prds/plan.md", lambda: doc.write_bytes(middle))

    summary = run_in_threads(IngestRun(_pipeline(source, store)), concurrency=2)  # type: ignore[arg-type]
    assert summary.counts == counts(ingested=1)
    assert _stored(database_url)["prds/plan.md"] == (_sha(middle), middle.decode())

    doc.write_bytes(first)
    again = run_in_threads(IngestRun(_pipeline(LocalSource(folder), store)), concurrency=2)
    assert again.counts == counts(ingested=1)
    assert _stored(database_url)["prds/plan.md"] == (_sha(first), first.decode())


def test_an_object_replaced_between_listing_and_download_is_held_under_the_downloads_etag(
    store: PostgresStore, database_url: str
) -> None:
    with FakeStorage(service_key=SERVICE_KEY) as fake:
        old = fake.put("knowledge", "prds/plan.md", b"# Plan\n\nThe old object.\n")
        new_bytes = b"# Plan\n\nThe new object, uploaded meanwhile.\n"
        replaced = {}
        with SupabaseSource(fake.url, SERVICE_KEY, "knowledge") as bucket:
            source = _Between(
                bucket,
                "prds/plan.md",
                lambda: replaced.update(obj=fake.put("knowledge", "prds/plan.md", new_bytes)),
            )
            summary = run_in_threads(IngestRun(_pipeline(source, store)), concurrency=1)  # type: ignore[arg-type]
            assert summary.counts == counts(ingested=1)
            key, text = _stored(database_url)["prds/plan.md"]
            assert text == new_bytes.decode()
            assert key == replaced["obj"].etag.strip('"') != old.etag.strip('"')

            again = run_in_threads(IngestRun(_pipeline(bucket, store)), concurrency=1)
            assert again.counts == counts(skipped=1)  # the listing now says what was read


# --- 7. unreadable for a moment is not broken for ever -----------------------------------------


def test_a_file_gone_when_the_run_reached_it_is_tried_again_by_the_next_run(
    tmp_path: Path, store: PostgresStore, database_url: str
) -> None:
    folder = tmp_path / "corpus"
    (folder / "prds").mkdir(parents=True)
    doc = folder / "prds/plan.md"
    text = b"# Plan\n\nStill the same words.\n"
    doc.write_bytes(text)
    (folder / "prds/other.md").write_bytes(b"# Other\n\nA second file.\n")
    source = _Between(LocalSource(folder), "prds/plan.md", doc.unlink)

    summary = run_in_threads(IngestRun(_pipeline(source, store)), concurrency=2)  # type: ignore[arg-type]
    [failed] = summary.failed
    assert (failed.path, failed.error_kind) == ("prds/plan.md", "unreadable")

    doc.write_bytes(text)  # back, with the very bytes it had when it was listed
    again = run_in_threads(IngestRun(_pipeline(LocalSource(folder), store)), concurrency=2)
    assert again.counts == counts(ingested=1, skipped=1)
    assert _stored(database_url)["prds/plan.md"] == (_sha(text), text.decode())


def test_an_object_deleted_before_its_download_is_retried_then_deleted_if_still_gone(
    store: PostgresStore, database_url: str
) -> None:
    with FakeStorage(service_key=SERVICE_KEY) as fake:
        fake.put("knowledge", "prds/plan.md", b"# Plan\n\nWords.\n")
        for i in range(3):
            fake.put("knowledge", f"prds/other-{i}.md", f"# Other {i}\n\nMore words.\n".encode())
        with SupabaseSource(fake.url, SERVICE_KEY, "knowledge") as bucket:
            run_in_threads(IngestRun(_pipeline(bucket, store)), concurrency=1)
            fake.put("knowledge", "prds/plan.md", b"# Plan\n\nEdited words.\n")
            source = _Between(
                bucket, "prds/plan.md", lambda: fake.delete("knowledge", "prds/plan.md")
            )
            summary = run_in_threads(IngestRun(_pipeline(source, store)), concurrency=1)  # type: ignore[arg-type]
            assert [(r.path, r.error_kind) for r in summary.failed] == [
                ("prds/plan.md", "unreadable")
            ]
            again = run_in_threads(IngestRun(_pipeline(bucket, store)), concurrency=1)
            assert again.deleted == ("prds/plan.md",)
            assert again.counts == counts(skipped=3)
    assert "prds/plan.md" not in _stored(database_url)


# --- 8. an empty document is ignored, not failed -------------------------------------------------


@pytest.mark.parametrize("empty", [b"", b"  \n\n\t \n", b"{}"])
def test_an_empty_document_is_ignored_with_its_reason_and_the_run_stays_green(
    tmp_path: Path, store: PostgresStore, database_url: str, empty: bytes
) -> None:
    folder = tmp_path / "corpus"
    (folder / "prds").mkdir(parents=True)
    (folder / "designs").mkdir()
    name = "designs/blank.json" if empty == b"{}" else "prds/blank.md"
    (folder / name).write_bytes(empty)
    for i in range(3):
        (folder / f"prds/note-{i}.md").write_bytes(f"# Note {i}\n\nWords {i}.\n".encode())

    summary = run_in_threads(IngestRun(_pipeline(LocalSource(folder), store)), concurrency=2)
    assert summary.counts == counts(ingested=3, ignored=1)
    [blank] = [r for r in summary.results if r.path == name]
    assert "nothing to index" in (blank.error or "")
    run = index_status(database_url).last_run  # type: ignore[union-attr]
    assert run is not None and run.outcome == "completed"

    again = run_in_threads(IngestRun(_pipeline(LocalSource(folder), store)), concurrency=2)
    assert again.counts == counts(skipped=4)  # not downloaded again while unchanged
    filled = b'{"title": "Now it says something"}' if empty == b"{}" else b"# Now it speaks\n"
    (folder / name).write_bytes(filled)
    third = run_in_threads(IngestRun(_pipeline(LocalSource(folder), store)), concurrency=2)
    assert third.counts == counts(ingested=1, skipped=3)


def test_a_document_emptied_in_the_source_leaves_nothing_stale_in_the_index(
    tmp_path: Path, store: PostgresStore, database_url: str
) -> None:
    folder = tmp_path / "corpus"
    (folder / "prds").mkdir(parents=True)
    (folder / "prds/plan.md").write_bytes(b"# Plan\n\nWords that will be removed.\n")
    run_in_threads(IngestRun(_pipeline(LocalSource(folder), store)), concurrency=1)
    (folder / "prds/plan.md").write_bytes(b"\n")

    summary = run_in_threads(IngestRun(_pipeline(LocalSource(folder), store)), concurrency=1)
    assert summary.counts == counts(ignored=1)
    assert _stored(database_url)["prds/plan.md"] == (_sha(b"\n"), "")


def test_hidden_objects_are_listed_as_ignored_and_placeholders_not_at_all() -> None:
    with FakeStorage(service_key=SERVICE_KEY) as fake:
        fake.put("knowledge", "prds/plan.md", b"# Plan\n")
        fake.put("knowledge", "prds/.drafts/idea.md", b"# Idea\n")
        fake.put("knowledge", "prds/.emptyFolderPlaceholder", b"")
        with SupabaseSource(fake.url, SERVICE_KEY, "knowledge") as bucket:
            listed = {f.path: f.ignored for f in bucket.list()}
    assert listed == {"prds/.drafts/idea.md": "a hidden name (a part starts with '.')",
                      "prds/plan.md": None}  # fmt: skip


# --- 9. the ledger holds every run that started -----------------------------------------------


def test_a_run_stopped_at_start_up_is_in_the_ledger(
    store: PostgresStore, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bucket that is not there (the listing is refused at start-up): exit 2, and
    ``tidal status`` shows that run as the last one, with its reason, not the previous one."""
    from flows.cli import ingest as main

    with FakeStorage(service_key=SERVICE_KEY) as fake:
        fake.put("knowledge", "prds/plan.md", b"# Plan\n")
        for name, value in {
            "TIDAL_SOURCE": "supabase://no-such-bucket",
            "SUPABASE_URL": fake.url,
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "TIDAL_DATABASE_URL": database_url,
            "TIDAL_DATA_DIR": str(tmp_path / "data"),
        }.items():
            monkeypatch.setenv(name, value)
        assert main([]) == 2

    status = index_status(database_url)
    assert status is not None and status.last_run is not None
    assert status.last_run.outcome == "stopped"
    assert "no-such-bucket" in (status.last_run.message or "")
    assert status.last_run.source == "supabase://no-such-bucket"


# --- 10. small defects: messages that name the real mistake -----------------------------------


def test_a_prefix_that_lists_nothing_in_a_bucket_with_other_folders_is_an_error_naming_them() -> (
    None
):
    from tidal.errors import SourceError

    with FakeStorage(service_key=SERVICE_KEY) as fake:
        fake.put("knowledge", "prds/plan.md", b"# Plan\n")
        fake.put("knowledge", "designs/Aurora_team/a.json", b"{}")
        typo = SupabaseSource(fake.url, SERVICE_KEY, "knowledge", ["PRDS"])
        with typo, pytest.raises(SourceError, match="nothing under PRDS.*designs, prds"):
            list(typo.list())
        fake.create_bucket("empty")
        with SupabaseSource(fake.url, SERVICE_KEY, "empty", ["prds"]) as empty:
            assert list(empty.list()) == []  # an empty bucket is not a typo


def test_a_supabase_url_with_the_storage_path_is_refused_naming_the_mistake() -> None:
    from tidal.errors import ConfigError

    with pytest.raises(ConfigError, match="without /storage/v1"):
        SupabaseSource("https://abc.supabase.co/storage/v1", SERVICE_KEY, "knowledge")


def test_a_gateway_page_is_one_short_line_in_the_error() -> None:
    from tidal.errors import TransientError

    with FakeStorage(service_key=SERVICE_KEY) as fake:
        fake.put("knowledge", "prds/plan.md", b"# Plan\n")
        with SupabaseSource(fake.url, SERVICE_KEY, "knowledge") as bucket:
            [file] = list(bucket.list())
            page = b"<html><body><h1>500 Internal Server Error</h1><p>nginx</p></body></html>"
            fake.fail_next("prds/plan.md", 500, body=page, times=10)
            with pytest.raises(TransientError) as caught:
                bucket.read(file)
    assert "Unable to parse" not in caught.value.message
    assert "<" not in caught.value.message
    assert "500 Internal Server Error nginx" in caught.value.message


def test_a_wrong_redis_password_says_the_credentials_were_refused(tmp_path: Path) -> None:
    import subprocess

    from tasks.results import check_redis
    from tests.services import free_port
    from tidal.embedders.ratelimit import RateBudget
    from tidal.errors import ConfigError

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--requirepass", "right-one", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import time

        import redis

        for _ in range(100):
            try:
                redis.Redis(port=port, password="right-one").ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        url = f"redis://:wrong-one@127.0.0.1:{port}/0"
        with pytest.raises(ConfigError, match="refused the credentials") as caught:
            RateBudget(url, rpm=10, tpm=100)
        assert "wrong-one" not in str(caught.value)
        with pytest.raises(ConfigError, match="refused the credentials"):
            check_redis(url)
    finally:
        server.terminate()
        server.wait(10)
