"""The Store contract, role by role (``tidal.store.protocols``), on every backend: the in-memory
store the run's tests use, and the Postgres store on a real Postgres 16 + pgvector (pgserver).

Each test runs once per backend. ``backend.open(source)`` opens a store of ``source`` on the
test's one index (a fresh database for Postgres), as runs of several sources share one.
What only Postgres has (its schema, the HNSW index, presence connections) is tested in
tests/test_store.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tidal.chunking import chunk_hash
from tidal.records import Chunk, Document, EmbeddedChunk, RunRecord, SourceFile
from tidal.store import (
    EmbeddingCache,
    FileClaims,
    FileLedger,
    IndexStatus,
    Store,
    VectorIndexUpkeep,
    VectorStore,
)
from tidal.store.memory import MemoryIndex, MemoryStore

DIM = 8
FP = "fingerprint-a"
EMB = "test:model"
SOURCE = "supabase://knowledge"


@dataclass(frozen=True)
class Backend:
    open: Callable[[str], Store]
    """A store of the given source on this test's index."""
    status: Callable[[], IndexStatus | None]
    """What ``tidal status`` reads from the index."""


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        index = MemoryIndex()
        yield Backend(lambda source: MemoryStore(source, index=index), index.status)
        return
    from tidal.store.postgres import PostgresStore, index_status

    url = request.getfixturevalue("database_url")
    opened: list[Store] = []

    def open_store(source: str) -> Store:
        opened.append(PostgresStore(url, dimension=DIM, source=source))
        return opened[-1]

    yield Backend(open_store, lambda: index_status(url))
    for store in opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open(SOURCE)


def _file(path: str = "prds/a.md", version: str = "v1") -> SourceFile:
    return SourceFile(path=path, size=10, content_hash=version)


def _doc(path: str = "prds/a.md", kind: str = "prd", title: str = "A") -> Document:
    return Document(path=path, kind=kind, text="x", title=title)  # type: ignore[arg-type]


def _one_hot(i: int) -> list[float]:
    vector = [0.0] * DIM
    vector[i % DIM] = 1.0
    return vector


def _chunks(n: int, tag: str = "", vectors: list[list[float]] | None = None) -> list[EmbeddedChunk]:
    out = []
    for i in range(n):
        text = f"chunk {i} {tag}"
        vector = vectors[i] if vectors else _one_hot(i)
        out.append(EmbeddedChunk(Chunk(i, text, 3, chunk_hash(text)), vector))
    return out


def _write(store: Store, path: str, chunks: list[EmbeddedChunk], version: str = "v1") -> None:
    store.replace_file(_file(path, version), _doc(path), chunks, fingerprint=FP, embedder=EMB)


def _fail(store: Store, path: str, version: str = "v2", error: str = "invalid JSON") -> None:
    store.record_failure(path, version, fingerprint=FP, error=error, kind="permanent", attempts=2)


def _stored(store: Store, path: str, source: str | None = None) -> list[tuple[int, str]]:
    """(chunk index, text) of every chunk a search finds for ``path`` (of ``source``, if given)."""
    only = {"source_path": path} | ({"source": source} if source else {})
    hits = store.search(_one_hot(0), limit=1000, filter=only)
    return sorted((h.chunk_index, h.content) for h in hits)


def _same(a: object, b: object) -> bool:
    return np.allclose(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))


def test_every_backend_plays_every_role_of_a_store(store: Store) -> None:
    roles = (VectorStore, FileLedger, FileClaims, EmbeddingCache, VectorIndexUpkeep, Store)
    assert all(isinstance(store, role) for role in roles)


# --- VectorStore: a file's chunks, all at once -------------------------------------------------


def test_a_written_file_is_searchable_and_current_for_its_fingerprint_only(store: Store) -> None:
    _write(store, "prds/a.md", _chunks(3, "a"))

    assert _stored(store, "prds/a.md") == [(0, "chunk 0 a"), (1, "chunk 1 a"), (2, "chunk 2 a")]
    assert store.current_files(FP) == {"prds/a.md": "v1"}
    assert store.current_files(FP, ["prds/a.md", "prds/b.md"]) == {"prds/a.md": "v1"}
    assert store.current_files(FP, ["prds/b.md"]) == {}
    assert store.current_files("another-fingerprint") == {}


def test_rewriting_a_file_replaces_all_its_chunks_and_its_version(store: Store) -> None:
    _write(store, "prds/a.md", _chunks(5, "old"), version="v1")
    _write(store, "prds/a.md", _chunks(3, "new"), version="v2")

    assert _stored(store, "prds/a.md") == [(i, f"chunk {i} new") for i in range(3)]
    assert store.current_files(FP) == {"prds/a.md": "v2"}


def test_rewriting_a_file_with_the_same_chunks_stores_each_once(store: Store) -> None:
    _write(store, "prds/a.md", _chunks(3), version="v1")
    _write(store, "prds/a.md", _chunks(3), version="v1")

    assert [i for i, _ in _stored(store, "prds/a.md")] == [0, 1, 2]


def test_readers_never_see_a_partial_chunk_set(store: Store) -> None:
    """While one thread keeps swapping 10 ↔ 25 chunks, searches only ever find 10 or 25."""
    _write(store, "prds/a.md", _chunks(10, "a"))
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(len(_stored(store, "prds/a.md")))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            _write(store, "prds/a.md", _chunks(25 if i % 2 == 0 else 10, str(i)), f"v{i}")
    finally:
        stop.set()
        reader.join()
    assert seen <= {10, 25}
    assert seen  # the reader did read


def test_an_empty_file_is_current_with_no_chunks(backend: Backend, store: Store) -> None:
    _write(store, "prds/empty.md", [])

    assert store.current_files(FP) == {"prds/empty.md": "v1"}
    assert store.stored_paths() == {"prds/empty.md"}
    assert _stored(store, "prds/empty.md") == []
    status = backend.status()
    assert status is not None and (status.files, status.chunks) == (1, 0)


def test_search_ranks_by_cosine_similarity_best_first(store: Store) -> None:
    vectors = [[1.0, 1.0, 1.0] + [0.0] * 5, [1.0] + [0.0] * 7, [1.0, 1.0] + [0.0] * 6]
    _write(store, "prds/a.md", _chunks(3, vectors=vectors))

    hits = store.search(_one_hot(0), limit=3)

    assert [h.chunk_index for h in hits] == [1, 2, 0]
    assert [h.score for h in hits] == pytest.approx([1.0, 2**-0.5, 3**-0.5], abs=1e-6)


def test_search_keeps_to_the_limit_and_to_the_filter(store: Store) -> None:
    _write(store, "prds/a.md", _chunks(3, "prd"))
    design = Document(path="designs/T/b.json", kind="design", text="x", title="B")
    store.replace_file(
        _file("designs/T/b.json"), design, _chunks(3, "design"), fingerprint=FP, embedder=EMB
    )

    assert len(store.search(_one_hot(1), limit=2)) == 2
    designs = store.search(_one_hot(1), limit=10, filter={"type": "design"})
    assert sorted((h.source_path, h.chunk_index) for h in designs) == [
        ("designs/T/b.json", i) for i in range(3)
    ]
    assert store.search(_one_hot(1), limit=10, filter={"type": "design", "title": "A"}) == []


def test_a_search_hit_carries_its_chunk_and_its_files_metadata(store: Store) -> None:
    _write(store, "prds/a.md", _chunks(3, "a"))

    [hit] = store.search(_one_hot(1), limit=1)

    assert (hit.source_path, hit.chunk_index, hit.content) == ("prds/a.md", 1, "chunk 1 a")
    assert hit.score == pytest.approx(1.0)
    assert hit.metadata == {
        "source_path": "prds/a.md",
        "type": "prd",
        "title": "A",
        "chunk_index": 1,
        "tokens": 3,
        "source": SOURCE,
    }


def test_a_store_without_a_source_leaves_it_out_of_the_metadata(backend: Backend) -> None:
    store = backend.open("")
    _write(store, "prds/a.md", _chunks(1))

    [hit] = store.search(_one_hot(0), limit=1)

    assert "source" not in hit.metadata and hit.metadata["source_path"] == "prds/a.md"


def test_search_keeps_to_a_path_prefix(store: Store) -> None:
    for path in ("prds/a.md", "designs/T/b.json", "designs/TU/c.json"):
        _write(store, path, _chunks(3, path))

    team = store.search(_one_hot(0), limit=10, path_prefix="designs/T/")
    designs = store.search(_one_hot(0), limit=10, path_prefix="designs/")

    assert sorted((h.source_path, h.chunk_index) for h in team) == [
        ("designs/T/b.json", i) for i in range(3)
    ]
    assert len(designs) == 6
    both = store.search(_one_hot(0), limit=10, path_prefix="designs/T/", filter={"title": "A"})
    assert sorted((h.source_path, h.chunk_index) for h in both) == sorted(
        (h.source_path, h.chunk_index) for h in team
    )
    assert store.search(_one_hot(0), limit=10, path_prefix="nowhere/") == []


# --- VectorStore: hybrid search ----------------------------------------------------------------


def _texts(store: Store, path: str, texts: list[str], vectors: list[list[float]]) -> None:
    chunks = [
        EmbeddedChunk(Chunk(i, text, 3, chunk_hash(text)), vector)
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    ]
    _write(store, path, chunks)


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("ST-5", "ST-5: the creditor may send a reminder once every 72 hours"),
        ("#1E6FD9", "the primary button fills with #1E6FD9 when pressed"),
    ],
)
def test_a_keyword_only_query_is_found_by_text_and_hybrid_search(
    store: Store, keyword: str, text: str
) -> None:
    """An ID or a hex colour in one chunk far from the query vector: vectors alone miss it."""
    _texts(store, "prds/a.md", [f"part {i} of the plan" for i in range(6)], [_one_hot(0)] * 6)
    _texts(store, "designs/T/b.json", ["a screen", text], [_one_hot(1), _one_hot(7)])

    text_only = store.hybrid_search(keyword, None, limit=3)
    hybrid = store.hybrid_search(keyword, _one_hot(0), limit=3)
    vector = store.search(_one_hot(0), limit=3)

    assert [(h.source_path, h.chunk_index) for h in text_only[:1]] == [("designs/T/b.json", 1)]
    assert ("designs/T/b.json", 1) in [(h.source_path, h.chunk_index) for h in hybrid]
    assert ("designs/T/b.json", 1) not in [(h.source_path, h.chunk_index) for h in vector]


def test_full_text_needs_the_words_carrying_most_of_the_questions_weight(store: Store) -> None:
    """Each word weighs its rarity; a chunk ranks by full text when its words carry 0.6 of the
    question's weight (a word the index lacks weighs nothing), not when it holds every word."""
    texts = ["offline sync resolves conflicts", "offline maps", "sync settings", "a timeline"]
    _texts(store, "prds/a.md", texts, [_one_hot(i) for i in range(4)])

    both = store.hybrid_search("how does offline sync work?", None, limit=5)
    rarer = store.hybrid_search("maps sync zeppelin", None, limit=5)

    # "offline" and "sync" weigh the same: a chunk holding one carries half, not enough.
    assert [h.content for h in both] == ["offline sync resolves conflicts"]
    assert both[0].score == pytest.approx(1 / 51)  # first of one ranking: 1 / (rrf_k + 1)
    # "maps" is in one chunk of four, "sync" in two: "maps" alone carries enough, "sync" not.
    assert [h.content for h in rarer] == ["offline maps"]
    assert store.hybrid_search("zeppelin", None, limit=5) == []


@pytest.mark.parametrize("near", [0, 1])
def test_chunks_holding_the_same_words_are_ranked_by_meaning(store: Store, near: int) -> None:
    """A paragraph repeated in two files (boilerplate, two markets' copies of one spec): the
    full-text ranking settles the tie by the vectors' distance to the question, never by id."""
    for i, path in enumerate(["prds/uk.md", "prds/nl.md"]):
        _texts(store, path, ["refunds are paid within 14 days"], [_one_hot(i)])

    hits = store.hybrid_search("refunds", _one_hot(near), limit=2, semantic_weight=0)

    paths = ["prds/uk.md", "prds/nl.md"]
    assert [h.source_path for h in hits] == (paths if near == 0 else paths[::-1])


def test_hybrid_search_fuses_both_rankings_by_reciprocal_rank(store: Store) -> None:
    texts = ["the sync engine", "a queue", "a cache", "a log"]
    _texts(store, "prds/a.md", texts, [_one_hot(0), _one_hot(1), _one_hot(2), _one_hot(3)])
    near = [1.0, 0.5] + [0.0] * 6  # nearest chunk 0, then chunk 1

    hits = store.hybrid_search("engine", near, limit=4)
    weighted = store.hybrid_search("engine", near, limit=4, full_text_weight=2.0, rrf_k=10)

    assert [h.chunk_index for h in hits[:2]] == [0, 1]
    assert hits[0].score == pytest.approx(1 / 51 + 1 / 51)  # first in both rankings
    assert hits[1].score == pytest.approx(1 / 52)  # second by vectors, no word
    assert weighted[0].score == pytest.approx(2 / 11 + 1 / 11)


def test_a_tie_in_hybrid_search_goes_to_the_full_text_match(store: Store) -> None:
    """Each ranking's first, which the other ranking (2 * limit long) did not find: a tie."""
    vectors = [_one_hot(0), [1.0, 1.0] + [0.0] * 6, _one_hot(5)]
    _texts(store, "prds/a.md", ["a queue", "a cache", "the sync engine"], vectors)

    [hit] = store.hybrid_search("engine", _one_hot(0), limit=1)

    assert (hit.content, hit.score) == ("the sync engine", pytest.approx(1 / 51))


def test_hybrid_search_keeps_to_the_filters_and_fills_k_from_the_vectors(store: Store) -> None:
    _write(store, "prds/a.md", _chunks(3, "prd"))
    design = Document(path="designs/T/b.json", kind="design", text="x", title="B")
    store.replace_file(
        _file("designs/T/b.json"), design, _chunks(3, "design"), fingerprint=FP, embedder=EMB
    )

    two = store.hybrid_search("no such words", _one_hot(1), limit=2, filter={"type": "design"})
    every = store.hybrid_search("chunk", _one_hot(1), limit=10, path_prefix="designs/T/")
    words = store.hybrid_search("chunk prd", None, limit=10, filter={"type": "prd"})

    assert [h.source_path for h in two] == ["designs/T/b.json"] * 2
    assert two[0].chunk_index == 1  # the nearest design
    assert sorted(h.chunk_index for h in every) == [0, 1, 2]
    assert {h.source_path for h in every} == {"designs/T/b.json"}
    assert sorted(h.content for h in words) == [f"chunk {i} prd" for i in range(3)]
    # The filter holds for the full text too: only PRDs hold "prd"; every chunk holds "chunk".
    assert store.hybrid_search("prd", None, limit=10, filter={"type": "design"}) == []
    designs = store.hybrid_search("chunk", None, limit=10, filter={"type": "design"})
    assert sorted((h.metadata["type"], h.chunk_index) for h in designs) == [
        ("design", i) for i in range(3)
    ]


def test_deleting_files_drops_their_chunks_and_ledger_rows_and_counts_the_chunks(
    store: Store,
) -> None:
    _write(store, "prds/a.md", _chunks(3))
    _write(store, "prds/b.md", _chunks(2))
    _write(store, "prds/c.md", _chunks(1))
    _fail(store, "prds/d.md")

    assert store.delete_files(["prds/a.md", "prds/b.md", "prds/d.md", "prds/never.md"]) == 5
    assert store.delete_files([]) == 0

    assert store.stored_paths() == {"prds/c.md"}
    assert store.current_files(FP) == {"prds/c.md": "v1"}
    assert store.failed_files() == []
    assert {h.source_path for h in store.search(_one_hot(0), limit=100)} == {"prds/c.md"}


# --- FileLedger: versions, failures, runs -------------------------------------------------------


def test_a_failure_keeps_the_last_good_chunks_searchable_but_never_current(store: Store) -> None:
    _write(store, "prds/a.md", _chunks(4))
    _fail(store, "prds/a.md", version="v2")

    assert len(_stored(store, "prds/a.md")) == 4
    assert store.current_files(FP) == {}
    assert store.stored_paths() == {"prds/a.md"}


def test_failed_files_carry_the_error_and_the_failed_version_latest_first(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    _fail(store, "prds/a.md", version="va", error="first")
    time.sleep(0.01)
    _fail(store, "prds/b.md", version="vb", error="second")
    _write(store, "prds/ok.md", _chunks(1))

    failed = store.failed_files()

    assert [(f.path, f.error, f.content_hash) for f in failed] == [
        ("prds/b.md", "second", "vb"),
        ("prds/a.md", "first", "va"),
    ]
    assert all((f.error_kind, f.attempts, f.fingerprint) == ("permanent", 2, FP) for f in failed)
    assert all(f.updated_at > before for f in failed)


def test_writing_a_failed_file_clears_its_failure(store: Store) -> None:
    _fail(store, "prds/a.md", version="v1")
    _write(store, "prds/a.md", _chunks(2), version="v1")

    assert store.failed_files() == []
    assert store.current_files(FP) == {"prds/a.md": "v1"}


def test_stored_paths_are_this_sources_ingested_and_failed_files(backend: Backend) -> None:
    mine, theirs = backend.open(SOURCE), backend.open("/srv/notes")
    _write(mine, "prds/a.md", _chunks(1))
    _fail(mine, "prds/b.md")
    _write(theirs, "prds/c.md", _chunks(1))

    assert mine.stored_paths() == {"prds/a.md", "prds/b.md"}
    assert theirs.stored_paths() == {"prds/c.md"}


def _run(finished_minute: int, outcome: str) -> RunRecord:
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    return RunRecord(
        started_at=start,
        finished_at=start + timedelta(minutes=finished_minute),
        source=SOURCE,
        outcome=outcome,  # type: ignore[arg-type]
        counts={"ingested": 3, "failed": 1},
        chunks=12,
        tokens=340,
        deleted=1,
        seconds=2.5,
        message=None if outcome == "completed" else "OpenAI down",
        flow_run_id="id-1",
        flow_run_name="brave-otter",
    )


def test_recorded_runs_are_what_the_index_status_reads(backend: Backend, store: Store) -> None:
    """The last run by when it finished, whatever order they were recorded in, and the last
    completed one beside it."""
    late_stop, completed, early = _run(30, "stopped"), _run(20, "completed"), _run(10, "stopped")
    for record in (late_stop, completed, early):
        store.record_run(record)

    status = backend.status()

    assert status is not None
    assert (status.last_run, status.last_success) == (late_stop, completed)


def test_the_index_status_counts_every_sources_files_and_chunks(backend: Backend) -> None:
    mine, theirs = backend.open(SOURCE), backend.open("/srv/notes")
    _write(mine, "prds/a.md", _chunks(3))
    _write(theirs, "prds/a.md", _chunks(2))
    _fail(theirs, "prds/b.md")
    mine.record_run(_run(1, "completed"))

    status = backend.status()

    assert status is not None
    assert (status.files, status.chunks, status.failed) == (2, 5, 1)


# --- sources: a file is its source and its path -------------------------------------------------


def test_two_sources_keep_the_same_path_apart(backend: Backend) -> None:
    bucket, folder = backend.open(SOURCE), backend.open("/srv/notes")
    _write(bucket, "prds/a.md", _chunks(3, "bucket"), version="vb")
    _write(folder, "prds/a.md", _chunks(2, "folder"), version="vf")
    _fail(folder, "prds/b.md")

    assert bucket.current_files(FP) == {"prds/a.md": "vb"}
    assert folder.current_files(FP) == {"prds/a.md": "vf"}
    assert bucket.failed_files() == [] and [f.path for f in folder.failed_files()] == ["prds/b.md"]
    assert len(_stored(bucket, "prds/a.md", SOURCE)) == 3

    assert bucket.delete_files(["prds/a.md", "prds/b.md"]) == 3

    assert folder.current_files(FP) == {"prds/a.md": "vf"}
    assert folder.stored_paths() == {"prds/a.md", "prds/b.md"}
    assert _stored(bucket, "prds/a.md") == [(0, "chunk 0 folder"), (1, "chunk 1 folder")]


def test_a_search_sees_every_sources_chunks_and_can_pick_one_source(backend: Backend) -> None:
    bucket, folder = backend.open(SOURCE), backend.open("/srv/notes")
    _write(bucket, "prds/a.md", _chunks(1, "bucket"))
    _write(folder, "prds/b.md", _chunks(1, "folder"))

    everyone = bucket.search(_one_hot(0), limit=10)
    only_folder = bucket.search(_one_hot(0), limit=10, filter={"source": "/srv/notes"})

    assert sorted(h.content for h in everyone) == ["chunk 0 bucket", "chunk 0 folder"]
    assert [h.content for h in only_folder] == ["chunk 0 folder"]


def test_adopting_takes_the_listed_files_that_have_no_source(backend: Backend) -> None:
    """Files an index kept before files knew their source: a source takes those it lists,
    with their chunks, and leaves the rest alone."""
    legacy = backend.open("")
    for path in ("prds/a.md", "prds/b.md", "prds/c.md"):
        _write(legacy, path, _chunks(3, path))
    mine = backend.open(SOURCE)
    assert mine.stored_paths() == set()

    assert mine.adopt(["prds/a.md", "prds/c.md", "prds/new.md"]) == 2

    assert mine.stored_paths() == {"prds/a.md", "prds/c.md"}
    assert mine.current_files(FP) == {"prds/a.md": "v1", "prds/c.md": "v1"}
    assert legacy.stored_paths() == {"prds/b.md"}
    assert mine.delete_files(["prds/a.md"]) == 3  # its chunks came with it
    assert _stored(mine, "prds/a.md") == []


def test_adopting_leaves_a_sourceless_file_where_this_source_has_its_own(
    backend: Backend,
) -> None:
    legacy, mine = backend.open(""), backend.open(SOURCE)
    _write(legacy, "prds/a.md", _chunks(2, "old"), version="old")
    _write(mine, "prds/a.md", _chunks(1, "mine"), version="mine")

    assert mine.adopt(["prds/a.md"]) == 0

    assert mine.current_files(FP) == {"prds/a.md": "mine"}
    assert legacy.current_files(FP) == {"prds/a.md": "old"}
    assert len(_stored(mine, "prds/a.md", SOURCE)) == 1


# --- FileClaims ---------------------------------------------------------------------------------


def _claim_in_thread(store: Store, path: str) -> tuple[threading.Event, threading.Event]:
    """Claim ``path`` on a thread; returns (got it, let it go)."""
    got, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.claim(path):
            got.set()
            release.wait(30)

    threading.Thread(target=hold, daemon=True).start()
    return got, release


def _first_of(*events: threading.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.is_set() for e in events):
            return True
        time.sleep(0.01)
    return False


def test_a_claim_excludes_other_stores_and_threads_until_it_ends(backend: Backend) -> None:
    first, second = backend.open(SOURCE), backend.open(SOURCE)
    got, release = _claim_in_thread(first, "prds/a.md")
    assert got.wait(10)
    other_store, let_go = _claim_in_thread(second, "prds/a.md")
    same_store, let_go_too = _claim_in_thread(first, "prds/a.md")
    elsewhere, free = _claim_in_thread(second, "prds/b.md")
    assert elsewhere.wait(10)  # another path is not held up
    assert not other_store.wait(1) and not same_store.is_set()
    release.set()
    # Exactly one of the two waiting claims gets it next.
    assert _first_of(other_store, same_store, timeout=10)
    assert not (other_store.is_set() and same_store.is_set())
    for event in (let_go, let_go_too, free):
        event.set()
    assert other_store.wait(10) and same_store.wait(10)


def test_the_same_path_of_two_sources_is_claimed_independently(backend: Backend) -> None:
    bucket, folder = backend.open(SOURCE), backend.open("/srv/notes")
    got, release = _claim_in_thread(bucket, "prds/a.md")
    assert got.wait(10)
    try:
        other, let_go = _claim_in_thread(folder, "prds/a.md")
        assert other.wait(10)
        let_go.set()
    finally:
        release.set()


def test_a_file_written_under_its_claim_is_free_once_the_block_ends(backend: Backend) -> None:
    first, second = backend.open(SOURCE), backend.open(SOURCE)
    with first.claim("prds/a.md"):
        _write(first, "prds/a.md", _chunks(2))
    got, release = _claim_in_thread(second, "prds/a.md")
    assert got.wait(10)
    release.set()
    assert first.current_files(FP) == {"prds/a.md": "v1"}


# --- EmbeddingCache: vectors bought once --------------------------------------------------------


def test_kept_vectors_are_found_by_chunk_hash_and_embedder(store: Store) -> None:
    one, two = _one_hot(1), _one_hot(2)
    store.keep_embeddings({"h1": one, "h2": two}, EMB)

    found = store.cached_embeddings(["h1", "h2", "h3"], EMB)

    assert set(found) == {"h1", "h2"}
    assert _same(found["h1"], one) and _same(found["h2"], two)
    assert store.cached_embeddings(["h1"], "other:model") == {}
    assert store.cached_embeddings([], EMB) == {}


def test_keeping_a_hash_again_keeps_the_first_vector(store: Store) -> None:
    store.keep_embeddings({"h1": _one_hot(1)}, EMB)
    store.keep_embeddings({"h1": _one_hot(5)}, EMB)

    assert _same(store.cached_embeddings(["h1"], EMB)["h1"], _one_hot(1))


def test_a_files_write_takes_its_kept_vectors_and_its_chunks_answer_for_them(
    store: Store,
) -> None:
    chunks = _chunks(2)
    store.keep_embeddings({c.chunk.hash: c.embedding for c in chunks} | {"other": _one_hot(7)}, EMB)

    _write(store, "prds/a.md", chunks)

    assert store.forget_kept_embeddings(0) == 1  # only the vector no file took was still kept
    found = store.cached_embeddings([c.chunk.hash for c in chunks], EMB)
    assert set(found) == {c.chunk.hash for c in chunks}  # now from the stored chunks


def test_stored_chunks_of_any_source_spare_buying_their_vectors_again(backend: Backend) -> None:
    bucket, folder = backend.open(SOURCE), backend.open("/srv/notes")
    chunks = _chunks(2, "shared text")
    _write(bucket, "prds/a.md", chunks)

    found = folder.cached_embeddings([c.chunk.hash for c in chunks], EMB)

    assert set(found) == {c.chunk.hash for c in chunks}
    assert _same(found[chunks[1].chunk.hash], chunks[1].embedding)
    assert folder.cached_embeddings([chunks[0].chunk.hash], "other:model") == {}


def test_forgetting_kept_vectors_spares_those_younger_than_the_limit(store: Store) -> None:
    store.keep_embeddings({"h1": _one_hot(1), "h2": _one_hot(2)}, EMB)

    assert store.forget_kept_embeddings(7) == 0
    assert set(store.cached_embeddings(["h1", "h2"], EMB)) == {"h1", "h2"}
    assert store.forget_kept_embeddings(0) == 2
    assert store.cached_embeddings(["h1", "h2"], EMB) == {}


# --- VectorIndexUpkeep --------------------------------------------------------------------------


def test_search_answers_while_the_vector_index_is_suspended_and_once_it_is_built(
    store: Store,
) -> None:
    store.build_vector_index()
    store.suspend_vector_index()
    _write(store, "prds/a.md", _chunks(5, "bulk"))

    assert [h.chunk_index for h in store.search(_one_hot(2), limit=1)] == [2]
    store.build_vector_index()
    assert [h.chunk_index for h in store.search(_one_hot(3), limit=1)] == [3]
