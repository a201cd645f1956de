"""The README's main job, as a user runs it: ``python flows/ingest.py`` with no configuration,
then ``tidal search``. One full ingest of the bundled corpus, shared by the search tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from flows import server as local_server
from tests.fakes.openai_server import FakeOpenAI
from tests.flowkit import chunks_by_path
from tidal.settings import REPO_ROOT, SAMPLE_CORPUS

INGEST = [sys.executable, str(REPO_ROOT / "flows" / "ingest.py")]
KEY = "sk-main-job-test"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder where the main job ran once with no configuration at all (the local Prefect
    server it started is stopped after the module's tests)."""
    cwd = tmp_path_factory.mktemp("main-job")
    home = cwd / "prefect-home"
    done = subprocess.run(
        INGEST,
        cwd=cwd,
        env=_clean_env(PREFECT_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    (cwd / "first-run.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield cwd
    local_server.stop(cwd / ".tidal")


def test_the_main_job_ingests_the_sample_corpus_with_no_configuration(workdir: Path) -> None:
    log = (workdir / "first-run.log").read_text()
    files = sorted(p for p in SAMPLE_CORPUS.rglob("*") if p.is_file())
    assert len(files) >= 40
    assert f"ingested {len(files)}, skipped 0 (unchanged), failed 0" in log
    assert re.search(rf"\[{len(files)}/{len(files)}\] \S+: \d+ chunks", log)  # per-file lines
    assert (workdir / ".tidal" / "pgdata" / "PG_VERSION").is_file()  # the embedded default
    server = local_server.running(workdir / ".tidal")  # kept for the next run, UI and all
    assert server is not None and f"Prefect UI at {server.ui_url}" in log
    assert "Warning" not in log  # a first run says what it did, and nothing a user must decode


def test_search_finds_the_document_written_for_the_question(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    monkeypatch.chdir(workdir)
    assert main(["search", "how do we handle offline sync?"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert re.match(r"1\. 0\.\d{4}  prds/offline-sync\.md  \(chunk \d+, prd\)", first), out


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("dark mode color tokens and contrast", "designs/Aurora_team/dark-mode.json"),
        (
            "split a restaurant bill between travelers in different currencies",
            "prds/expense-splitting.md",
        ),
        ("packing checklist screen", "designs/Cascade_team/packing-list.json"),
        ("quiet hours for notifications", "prds/push-notifications.txt"),
    ],
)
def test_search_ranks_the_matching_document_first(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, query: str, expected: str
) -> None:
    from flows.search import search
    from tidal.settings import load_settings

    monkeypatch.chdir(workdir)
    hits = search(load_settings(), query, limit=3)
    assert hits[0].source_path == expected, [(h.source_path, round(h.score, 3)) for h in hits]


@pytest.mark.parametrize("mode", ["hybrid", "vector"])
@pytest.mark.parametrize("k", [5, 20])
def test_search_by_type_on_a_question_prds_answer_returns_k_designs(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, k: int, mode: str
) -> None:
    """The PRD chunks crowd the nearest ones; `--type design` returned none before."""
    from flows.search import search
    from tidal.settings import load_settings

    monkeypatch.chdir(workdir)
    question = "how do we handle offline sync?"
    hits = search(load_settings(), question, limit=k, kind="design", mode=mode)  # type: ignore[arg-type]

    assert len(hits) == k
    assert {h.metadata["type"] for h in hits} == {"design"}


def test_search_by_team_or_path_keeps_to_their_folders(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    monkeypatch.chdir(workdir)
    question = "how do we handle offline sync?"
    assert main(["search", question, "--team", "Borealis_team", "-k", "12"]) == 0
    team = re.findall(r"^\d+\. \S+  (\S+)  ", capsys.readouterr().out, re.M)
    assert main(["search", question, "--path", "prds/", "-k", "12", "--mode", "vector"]) == 0
    prds = re.findall(r"^\d+\. \S+  (\S+)  ", capsys.readouterr().out, re.M)

    assert len(team) == 12 and all(p.startswith("designs/Borealis_team/") for p in team)
    assert len(prds) == 12 and all(p.startswith("prds/") for p in prds)


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [("ST-5", "prds/expense-splitting.md"), ("#0B4F51", "designs/Aurora_team/dark-mode.json")],
)
@pytest.mark.parametrize("mode", ["text", "hybrid"])
def test_a_keyword_in_one_chunk_is_found_by_text_and_hybrid_search(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, keyword: str, expected: str, mode: str
) -> None:
    """An ID or a hex colour, which means little to the model: full text finds it."""
    from flows.search import search
    from tidal.settings import load_settings

    monkeypatch.chdir(workdir)
    hits = search(load_settings(), keyword, limit=5, mode=mode)  # type: ignore[arg-type]

    assert expected in [h.source_path for h in hits], [h.source_path for h in hits]
    assert any(keyword in h.content for h in hits if h.source_path == expected)


def test_every_file_is_recorded_with_its_chunks(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidal.store.embedded import embedded_database_url

    url = embedded_database_url(workdir / ".tidal")
    with psycopg.connect(url) as conn:
        recorded = dict(
            conn.execute(
                "select path, chunk_count from ingested_files where status = 'ingested'"
            ).fetchall()
        )
        (gaps,) = conn.execute(
            "select count(*) from (select source_path from documents group by 1"
            " having max(chunk_index) + 1 <> count(*)) g"
        ).fetchone()
    expected = {
        p.relative_to(SAMPLE_CORPUS).as_posix() for p in SAMPLE_CORPUS.rglob("*") if p.is_file()
    }
    stored = chunks_by_path(url)
    assert set(recorded) == expected
    assert recorded == stored
    assert gaps == 0


def test_a_second_run_re_embeds_nothing(workdir: Path) -> None:
    done = subprocess.run(
        INGEST,
        cwd=workdir,
        env=_clean_env(PREFECT_HOME=str(workdir / "prefect-home")),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    n = sum(1 for p in SAMPLE_CORPUS.rglob("*") if p.is_file())
    assert f"ingested 0, skipped {n} (unchanged), failed 0" in done.stdout
    # Unchanged files are counted, not listed one by one (the CSV report lists every file).
    assert not re.search(r"\b(prd|design)\s+skipped\b", done.stdout)
    [report] = sorted((workdir / ".tidal" / "reports").glob("run-*.csv"))[-1:]
    assert report.read_text().count(",skipped,") == n
    # Nothing to ingest: decided without a temporary Prefect server, and still on the ledger.
    assert "no Prefect flow run was started" in done.stdout
    assert "temporary server" not in done.stdout + done.stderr
    from tidal.store.embedded import embedded_database_url

    with psycopg.connect(embedded_database_url(workdir / ".tidal")) as conn:
        ledger = conn.execute(
            "select outcome, flow_run_name is not null, (counts->>'skipped')::int"
            " from ingest_runs order by id"
        ).fetchall()
    assert ledger[0][:2] == ("completed", True)  # the first run: a flow run
    assert ledger[-1] == ("completed", False, n)


def test_a_bad_setting_fails_at_once_naming_the_variable(tmp_path: Path) -> None:
    done = subprocess.run(
        INGEST,
        cwd=tmp_path,
        env=_clean_env(TIDAL_CONCURRENCY="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "TIDAL_CONCURRENCY = '0': Input should be greater than or equal to 1" in done.stderr
    assert (
        "Starting temporary server" not in done.stdout + done.stderr
    )  # refused before Prefect starts


def test_a_failed_file_reads_as_the_table_the_summary_and_one_message(tmp_path: Path) -> None:
    """What a terminal shows when a file fails: its row, the summary naming it, the run's one
    line - no traceback."""
    source = tmp_path / "docs"
    (source / "prds").mkdir(parents=True)
    (source / "designs" / "x").mkdir(parents=True)
    (source / "prds" / "a.md").write_text("# A\n\nA short document.\n")
    (source / "designs" / "x" / "bad.json").write_text('{"title": "Broken", "screens": [')
    done = subprocess.run(
        INGEST,
        cwd=tmp_path,
        env=_clean_env(
            TIDAL_SOURCE=str(source),
            TIDAL_PREFECT_SERVER="temporary",
            PREFECT_HOME=str(tmp_path / "prefect-home"),
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-3000:]
    assert re.search(r"designs/x/bad\.json\s+design\s+failed", out)  # the table
    assert "ingested 1, skipped 0 (unchanged), failed 1" in out  # the summary
    assert "Finished in state Failed('1 of 2 files failed: designs/x/bad.json" in out
    assert "Traceback" not in out


def test_ctrl_c_mid_run_exits_130_in_one_line_and_the_next_run_carries_on(
    tmp_path: Path, prefect_api: dict[str, str], database_url: str
) -> None:
    """Each file lands whole or not at all, so an interrupted run keeps what finished."""
    corpus = tmp_path / "corpus"
    (corpus / "prds").mkdir(parents=True)
    texts = {f"prds/n-{i:02d}.md": f"# Note {i}\n\nNote {i} body text.\n" for i in range(30)}
    for rel, text in texts.items():
        (corpus / rel).write_text(text)
    with FakeOpenAI(api_key=KEY) as api:
        api.delay_next(0.5, times=10**6)  # slow answers: files are in flight at the interrupt
        env = {
            **prefect_api,
            "TIDAL_SOURCE": str(corpus),
            "TIDAL_DATABASE_URL": database_url,
            "TIDAL_EMBEDDER": "openai",
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": api.base_url,
            "TIDAL_CONCURRENCY": "2",
        }
        run = subprocess.Popen(
            INGEST, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while len(api.requests) < 4:  # the model checked, and files under way
                assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()
                time.sleep(0.05)
            run.send_signal(signal.SIGINT)
            out, _ = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
        assert run.returncode == 130, out[-3000:]
        assert "tidal: interrupted; the files that finished are kept" in out
        assert "Traceback" not in out
        landed = chunks_by_path(database_url)
        assert len(landed) < len(texts) and set(landed.values()) <= {1}  # whole files only

        again = subprocess.run(
            INGEST, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"skipped {len(landed)} (unchanged)" in again.stdout + again.stderr
    assert chunks_by_path(database_url) == dict.fromkeys(texts, 1)
