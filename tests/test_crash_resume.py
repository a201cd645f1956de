"""Crash safety: a run SIGKILLed anywhere, then re-run, leaves every file indexed exactly once.

``tests/crash_driver.py`` runs the real flow in a subprocess (real Prefect, against the test
harness's API server; real Postgres; real Redis results; the real ``openai`` client against
``FakeOpenAI`` running in this process) and SIGKILLs itself at one point: while listing, after
a source read, after an embedding call, or inside the store's transaction with the chunks
inserted but not committed. The test checks what the killed run left, runs the flow again to
the end, and checks that:

* every file of the corpus is ingested exactly once, at its current content;
* no (path, chunk index) is stored twice, and no file has a partial or mixed chunk set;
* no file completed before the kill is embedded again by the re-run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tidal.embedders.openai import CHECK_TEXT
from tidal.settings import SAMPLE_CORPUS

DRIVER = Path(__file__).with_name("crash_driver.py")
OPENAI_KEY = "sk-crash-test-key"
RUN_TIMEOUT = 300

# (kill point, n): the run dies on the n-th occurrence of the point.
SCENARIOS = [
    pytest.param("listing", 30, id="listing"),
    pytest.param("read", 20, id="read"),
    pytest.param("embed", 15, id="embed"),
    pytest.param("transaction", 10, id="transaction"),
]


# -- the corpus ----------------------------------------------------------------------------

_VOCABULARY = (
    "traveler itinerary booking offline sync payment currency passport reminder calendar "
    "invite group poll vault document map region download pin route timeline dashboard "
    "subscription paywall moderation queue accessibility contrast typography haptics "
    "onboarding referral analytics export deletion notification quiet hours checklist "
    "latency cache retry budget audit consent locale timezone fallback banner toast sheet"
)
_WORDS = _VOCABULARY.split()


def _sentences(rng: random.Random, tag: str, count: int) -> list[str]:
    """Distinct sentences: each names its file and its position, so no two files share text."""
    out = []
    for i in range(count):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 18)))
        out.append(f"{tag} item {i}: the {words} must be handled by the {tag} team.")
    return out


def build_corpus(root: Path) -> list[str]:
    """The 44 sample files plus 20 generated ones of varied size and type; relative paths."""
    shutil.copytree(SAMPLE_CORPUS, root)
    rng = random.Random(20240611)
    for i in range(8):  # markdown PRDs, from one paragraph to several 512-token chunks
        tag = f"crashprd{i:02d}"
        sections = [
            f"## Section {s}\n\n" + " ".join(_sentences(rng, f"{tag}s{s}", 4 + 6 * (i % 4)))
            for s in range(1 + i % 3)
        ]
        (root / "prds" / f"generated-{i:02d}.md").write_text(
            f"# Generated PRD {i}\n\n" + "\n\n".join(sections) + "\n", encoding="utf-8"
        )
    for i in range(4):  # plain-text PRDs
        tag = f"crashtxt{i:02d}"
        (root / "prds" / f"notes-{i:02d}.txt").write_text(
            "\n\n".join(_sentences(rng, tag, 3 + 10 * i)) + "\n", encoding="utf-8"
        )
    designs = root / "designs" / "Echo_team"
    designs.mkdir()
    for i in range(8):  # design JSON: screens of components
        tag = f"crashdesign{i:02d}"
        screens = [
            {
                "name": f"{tag} screen {s}",
                "components": [
                    {"type": rng.choice(["button", "list", "card", "input"]), "label": text}
                    for text in _sentences(rng, f"{tag}s{s}", 2 + 3 * (i % 3))
                ],
            }
            for s in range(1 + i % 4)
        ]
        design = {"title": f"Generated design {i}", "team": "Echo", "screens": screens}
        (designs / f"generated-{i:02d}.json").write_text(json.dumps(design, indent=2), "utf-8")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# -- reading and checking the index --------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """An ``ingested_files`` row."""

    status: str
    content_hash: str
    fingerprint: str
    chunk_count: int


@dataclass(frozen=True)
class Row:
    """A ``documents`` row, as far as the checks need it."""

    path: str
    index: int
    hash: str
    text: str


@dataclass(frozen=True)
class Index:
    files: dict[str, Recorded]
    rows: list[Row]

    def texts(self, paths: Iterable[str]) -> set[str]:
        wanted = set(paths)
        return {r.text for r in self.rows if r.path in wanted}


def read_index(conn: psycopg.Connection) -> Index:
    files = {
        path: Recorded(status, content_hash, fingerprint, chunk_count)
        for path, status, content_hash, fingerprint, chunk_count in conn.execute(
            "select path, status, content_hash, fingerprint, chunk_count from ingested_files"
        )
    }
    rows = [
        Row(*r)
        for r in conn.execute(
            "select source_path, chunk_index, chunk_hash, content from documents"
            " order by source_path, chunk_index"
        )
    ]
    return Index(files, rows)


def index_problems(
    index: Index,
    expected: Mapping[str, list[tuple[int, str, str]]],
    hashes: Mapping[str, str],
    fingerprint: str,
    *,
    require: Iterable[str] = (),
) -> list[str]:
    """Everything wrong with the index; ``[]`` when it is consistent.

    ``expected`` maps each path to the (index, hash, text) chunks its current content makes,
    ``hashes`` to its content hash. Every file recorded as ingested must hold exactly those
    chunks; rows with no ingested record are a partial write; ``require`` must all be ingested.
    """
    problems: list[str] = []
    seen = Counter((r.path, r.index) for r in index.rows)
    problems += [f"duplicate row {key}" for key, n in sorted(seen.items()) if n > 1]
    by_path: dict[str, list[Row]] = defaultdict(list)
    for row in index.rows:
        by_path[row.path].append(row)
    for path in sorted(by_path):
        record = index.files.get(path)
        if record is None or record.status != "ingested":
            problems.append(f"{path}: {len(by_path[path])} rows but not recorded as ingested")
    for path in sorted(set(require)):
        record = index.files.get(path)
        if record is None or record.status != "ingested":
            problems.append(f"{path}: not ingested ({record.status if record else 'no record'})")
    for path, record in sorted(index.files.items()):
        if record.status != "ingested":
            continue
        rows = sorted(by_path.get(path, []), key=lambda r: r.index)
        indices = [r.index for r in rows]
        if len(rows) != record.chunk_count:
            problems.append(f"{path}: {len(rows)} rows, recorded chunk_count {record.chunk_count}")
        if indices != list(range(len(rows))):
            problems.append(f"{path}: chunk indices {indices} are not 0..n-1")
        if path not in expected:
            problems.append(f"{path}: recorded as ingested but not in the source")
            continue
        if record.content_hash != hashes[path] or record.fingerprint != fingerprint:
            problems.append(f"{path}: recorded at another version or fingerprint")
        if [(r.index, r.hash, r.text) for r in rows] != expected[path]:
            problems.append(f"{path}: stored chunks differ from what its content makes")
    return problems


def test_the_index_checks_find_what_they_look_for() -> None:
    """The detectors are not vacuous: each planted fault is reported, a clean index is not."""
    expected = {"a.md": [(0, "h0", "a zero"), (1, "h1", "a one")], "b.md": [(0, "g0", "b zero")]}
    hashes = {"a.md": "ha", "b.md": "hb"}
    good = {
        "a.md": Recorded("ingested", "ha", "fp", 2),
        "b.md": Recorded("ingested", "hb", "fp", 1),
    }
    rows = [
        Row("a.md", 0, "h0", "a zero"),
        Row("a.md", 1, "h1", "a one"),
        Row("b.md", 0, "g0", "b zero"),
    ]
    assert index_problems(Index(good, rows), expected, hashes, "fp", require=["a.md", "b.md"]) == []

    def problems(files: dict[str, Recorded], rows: list[Row], require: list[str] = ()) -> str:
        found = index_problems(Index(files, rows), expected, hashes, "fp", require=require)
        assert found, "a planted fault went unnoticed"
        return "\n".join(found)

    assert "duplicate row ('a.md', 1)" in problems(good, [*rows, Row("a.md", 1, "h1", "a one")])
    assert "not 0..n-1" in problems(
        {**good, "a.md": Recorded("ingested", "ha", "fp", 1)}, [rows[1], rows[2]]
    )
    assert "recorded chunk_count 2" in problems(good, [rows[0], rows[2]])  # a partial set
    assert "not recorded as ingested" in problems({"b.md": good["b.md"]}, rows)  # orphan rows
    assert "not recorded as ingested" in problems(
        {**good, "a.md": Recorded("failed", "ha", "fp", 0)}, rows
    )
    stale = [Row("a.md", 0, "h0", "a zero"), Row("a.md", 1, "old", "a old"), rows[2]]
    assert "differ from what its content makes" in problems(good, stale)  # a mixed version
    assert "another version" in problems(
        {**good, "b.md": Recorded("ingested", "old", "fp", 1)}, rows
    )
    assert "b.md: not ingested (no record)" in problems(
        {"a.md": good["a.md"]}, rows[:2], require=["a.md", "b.md"]
    )


# -- running the driver --------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float
    marker: list[dict]


def run_driver(point: str, n: int, env: dict[str, str], cwd: Path, name: str) -> Run:
    """The driver in its own session; the whole process group is killed afterwards."""
    log = cwd / f"{name}.log"
    marker = cwd / f"{name}.marker"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(DRIVER), point, str(n)],
            cwd=cwd,
            env={**env, "CRASH_MARKER": str(marker)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=RUN_TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything the run started dies with it
            proc.wait()
    lines = marker.read_text().splitlines() if marker.exists() else []
    return Run(
        returncode,
        log.read_text(errors="replace"),
        time.perf_counter() - started,
        [json.loads(line) for line in lines],
    )


@pytest.fixture
def openai_api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=OPENAI_KEY, dimension=1536) as fake:
        yield fake


@pytest.fixture
def crash_env(
    prefect_harness: None,
    database_url: str,
    redis_url: str,
    openai_api: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The subprocess's environment; also set here, so this process builds the same pipeline."""
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    assert api_url, "the Prefect test harness set no API URL"
    tidal = {
        "TIDAL_SOURCE": str(tmp_path / "corpus"),
        "TIDAL_DATABASE_URL": database_url,
        "TIDAL_REDIS_URL": redis_url,
        "TIDAL_DATA_DIR": str(tmp_path / "data"),
        "TIDAL_EMBEDDER": "openai",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": openai_api.base_url,
        "TIDAL_CONCURRENCY": "2",
        "TIDAL_RETRY_DELAY_SECONDS": "0.05",
    }
    for key, value in tidal.items():
        monkeypatch.setenv(key, value)
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TIDAL_", "PREFECT_", "OPENAI_", "SUPABASE_"))
    }
    return {
        **inherited,
        **tidal,
        "PREFECT_API_URL": api_url,  # the harness's server: the run starts no server of its own
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


@dataclass(frozen=True)
class Expected:
    chunks: dict[str, list[tuple[int, str, str]]]
    hashes: dict[str, str]
    fingerprint: str

    def problems(self, index: Index, require: Iterable[str] = ()) -> list[str]:
        return index_problems(index, self.chunks, self.hashes, self.fingerprint, require=require)


def _content(embedded: str) -> str:
    """A chunk's stored text from the text it was embedded as: its context (title and section
    path, one line each) and a blank line come first."""
    return embedded.split("\n\n", 1)[1]


def expected_index(paths: list[str]) -> Expected:
    """What each file's current content makes, through the pipeline the run itself builds."""
    from tidal.parsing import parse
    from tidal.pipeline import build_pipeline
    from tidal.settings import load_settings

    with build_pipeline(load_settings()) as pipeline:
        files = {f.path: f for f in pipeline.source.list()}
        assert sorted(files) == paths
        chunks = {
            path: [
                (c.index, c.hash, c.text)
                for c in pipeline.chunk(parse(path, pipeline.source.read(f)))
            ]
            for path, f in files.items()
        }
        return Expected(chunks, {p: f.content_hash for p, f in files.items()}, pipeline.fingerprint)


def _explain(problems: list[str], run: Run) -> str:
    log = run.output[-2000:]
    return "\n".join([*problems, f"--- end of the run's log (exit {run.returncode}) ---", log])


def _summary_counts(output: str) -> tuple[int, int, int]:
    found = re.findall(r"ingested (\d+), skipped (\d+) \(unchanged\), failed (\d+)", output)
    assert found, output[-3000:]
    ingested, skipped, failed = found[-1]
    return int(ingested), int(skipped), int(failed)


# -- the test ------------------------------------------------------------------------------


@pytest.mark.parametrize(("point", "n"), SCENARIOS)
def test_a_run_killed_anywhere_resumes_to_an_index_with_every_file_exactly_once(
    point: str,
    n: int,
    crash_env: dict[str, str],
    database_url: str,
    openai_api: FakeOpenAI,
    tmp_path: Path,
) -> None:
    paths = build_corpus(tmp_path / "corpus")
    assert len(paths) >= 60

    # 1. The killed run (on an empty database: it creates the schema itself).
    killed = run_driver(point, n, crash_env, tmp_path, f"{point}-killed")
    expected = expected_index(paths)
    owners: dict[str, set[str]] = defaultdict(set)
    for path, chunks in expected.chunks.items():
        for _, _, text in chunks:
            owners[text].add(path)
    tail = killed.output[-4000:]
    assert killed.returncode == -signal.SIGKILL, f"exit {killed.returncode}\n{tail}"
    assert [m["point"] for m in killed.marker] == [point], killed.marker
    [where] = killed.marker
    embedded_before = len(openai_api.inputs_embedded)
    with psycopg.connect(database_url) as conn:
        after_kill = read_index(conn)
        kept = {h for (h,) in conn.execute("select chunk_hash from embedding_cache")}
    problems = expected.problems(after_kill)
    assert not problems, _explain(problems, killed)
    done = {p for p, r in after_kill.files.items() if r.status == "ingested"}
    assert not {p for p, r in after_kill.files.items() if r.status != "ingested"}, tail

    if point == "listing":
        assert where["yielded"] == n
        assert done == set() and after_kill.rows == []  # nothing is ingested before the listing
        assert embedded_before == 0
    else:
        assert 0 < len(done) < len(paths), f"the kill struck after {len(done)} files\n{tail}"
    if point == "read":
        assert where["path"] not in done
    if point == "embed":
        assert where["vectors"] == where["texts"] > 0  # the vectors were bought, then lost
    if point == "transaction":
        # The chunks were in, visible to their own transaction, and the kill undid them all.
        assert where["in_transaction"] is True
        assert where["visible_in_transaction"] == where["rows"] > 0
        assert where["path"] not in after_kill.files
        assert not [r for r in after_kill.rows if r.path == where["path"]]

    # 2. The re-run, to the end.
    resumed = run_driver("none", 1, crash_env, tmp_path, f"{point}-resumed")
    assert resumed.returncode == 0, resumed.output[-4000:]
    assert resumed.marker == []
    assert _summary_counts(resumed.output) == (len(paths) - len(done), len(done), 0)

    with psycopg.connect(database_url) as conn:
        final = read_index(conn)
        # The killed run was a first ingest, loading in bulk with no vector index; the re-run
        # built it.
        index = "select to_regclass('documents_embedding_idx')"
        assert conn.execute(index).fetchone() == ("documents_embedding_idx",)
        # Every file exactly once, at its current content, with its whole chunk set.
        problems = expected.problems(final, require=paths)
        assert not problems, _explain(problems, resumed)
        assert set(final.files) == set(paths)
        # The checks see a fault planted in this very database (rolled back afterwards).
        victim = paths[len(paths) // 2]
        with conn.transaction(force_rollback=True):
            conn.execute(
                "delete from documents where source_path = %s and chunk_index = 0", (victim,)
            )
            assert any(victim in p for p in expected.problems(read_index(conn), require=paths))
        with conn.transaction(force_rollback=True):
            constraint = conn.execute(
                "select conname from pg_constraint where conrelid = 'documents'::regclass"
                " and contype = 'u'"
            ).fetchone()
            if constraint is not None:
                conn.execute(f'alter table documents drop constraint "{constraint[0]}"')
            conn.execute(
                "create temp table planted on commit drop as"
                " select * from documents where source_path = %s and chunk_index = 0",
                (victim,),
            )
            conn.execute("update planted set id = gen_random_uuid()")
            conn.execute("alter table planted drop column fts")  # generated: Postgres makes it
            conn.execute("insert into documents select * from planted")
            assert f"duplicate row ('{victim}', 0)" in expected.problems(read_index(conn))
        assert expected.problems(read_index(conn), require=paths) == []

    if point == "transaction":
        assert final.files[where["path"]].chunk_count == where["rows"]

    # No file completed before the kill is embedded again. Texts shared with an unfinished file
    # may rightly be sent again, so the check is on the texts that only completed files hold.
    bought = [_content(t) for t in openai_api.inputs_embedded if t != CHECK_TEXT]  # not the check
    everything = Counter(bought)
    resent = [_content(t) for t in openai_api.inputs_embedded[embedded_before:] if t != CHECK_TEXT]
    unfinished = set(paths) - done
    unfinished_texts = {t for p in unfinished for _, _, t in expected.chunks[p]}
    done_only = {t for t in final.texts(done) if t not in unfinished_texts}
    assert all(final.texts([p]) & done_only for p in done)  # each has a chunk of its own
    again = sorted({min(owners[t]) for t in done_only & set(resent)})
    assert not again, f"files completed before the kill were embedded again: {again}"
    twice = sorted({min(owners[t]) for t in done_only if len(owners[t]) == 1 and everything[t] > 1})
    assert not twice, f"files completed before the kill were embedded twice: {twice}"
    # The re-run embeds only what unfinished files hold, and every such text got a vector.
    assert set(resent) <= unfinished_texts
    assert unfinished_texts <= set(everything)
    # Vectors kept as their batch returned (embedding_cache) are never bought again.
    kept_texts = {t for chunks in expected.chunks.values() for _, h, t in chunks if h in kept}
    assert not kept_texts & set(resent), "vectors kept before the kill were bought again"
    if point == "embed":  # the vectors of the killed call were bought, lost, and bought again
        before = [t for t in openai_api.inputs_embedded[:embedded_before] if t != CHECK_TEXT]
        lost = {_content(t) for t in before} - final.texts(done) - kept_texts
        assert lost and lost <= set(resent)
    print(
        f"\n{point}@{n}: killed run {killed.seconds:.1f} s ({len(done)} files done),"
        f" resumed run {resumed.seconds:.1f} s ({len(unfinished)} files,"
        f" {len(resent)} chunks embedded)"
    )
