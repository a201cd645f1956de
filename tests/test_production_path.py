"""The production path end to end: a Supabase Storage bucket (fake server, real `supabase`
client) through OpenAI embeddings (fake server, real `openai` client) into the real Postgres,
orchestrated by the real flow."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.storage_server import FakeStorage
from tests.flowkit import call_flow, chunks_by_path, counts
from tidal.settings import SAMPLE_CORPUS

pytestmark = pytest.mark.usefixtures("prefect_harness")

FILES = [
    "designs/Aurora_team/icon-set.json",
    "designs/Borealis_team/route-optimizer.json",
    "designs/Delta_team/subscription-paywall.json",
    "prds/calendar-export.md",
    "prds/referral-program.md",
    "prds/analytics-event-taxonomy.txt",
]
SERVICE_KEY = "service-role-key-that-must-never-be-logged"
OPENAI_KEY = "sk-openai-key-that-must-never-be-logged"


@pytest.fixture
def storage() -> Iterator[FakeStorage]:
    with FakeStorage(service_key=SERVICE_KEY) as fake:
        for rel in FILES:
            fake.put("knowledge", rel, (SAMPLE_CORPUS / rel).read_bytes())
        fake.put("knowledge", "designs/.emptyFolderPlaceholder", b"")
        fake.put("knowledge", "archive/old.md", b"# Old\n\nNot under the configured prefixes.\n")
        yield fake


@pytest.fixture
def openai_api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=OPENAI_KEY, dimension=1536) as fake:
        yield fake


@pytest.fixture
def production_env(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    redis_url: str,
    storage: FakeStorage,
    openai_api: FakeOpenAI,
) -> str:
    for name, value in {
        "TIDAL_SOURCE": "supabase://knowledge/designs,prds",
        "SUPABASE_URL": storage.url,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "TIDAL_EMBEDDER": "openai",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": openai_api.base_url,
        "TIDAL_DATABASE_URL": database_url,
        "TIDAL_REDIS_URL": redis_url,
        "TIDAL_RETRY_DELAY_SECONDS": "0.05",
    }.items():
        monkeypatch.setenv(name, value)
    return database_url


def _run():  # type: ignore[no-untyped-def]
    state = call_flow(return_state=True)
    return state, state.result(raise_on_failure=False)


def test_bucket_to_openai_to_postgres(
    production_env: str,
    storage: FakeStorage,
    openai_api: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    state, summary = _run()

    assert state.is_completed(), state.message
    assert summary.counts == counts(ingested=len(FILES))
    assert sorted(storage.downloads) == sorted(FILES)  # no placeholder, nothing outside prefixes
    stored = chunks_by_path(production_env)
    with psycopg.connect(production_env) as conn:
        (typmod,) = conn.execute(
            "select atttypmod from pg_attribute"
            " where attrelid = 'documents'::regclass and attname = 'embedding'"
        ).fetchone()
        kinds = dict(
            conn.execute("select source_path, metadata->>'type' from documents").fetchall()
        )
    assert stored == {r.path: r.chunks for r in summary.results}
    assert typmod == 1536
    assert kinds["designs/Aurora_team/icon-set.json"] == "design"
    assert kinds["prds/calendar-export.md"] == "prd"
    assert len(openai_api.inputs_embedded) == sum(stored.values()) + 1  # + the run's check
    assert all(r["encoding_format"] == "base64" for r in openai_api.requests)

    logs = caplog.text + "".join(capfd.readouterr())
    assert SERVICE_KEY not in logs and OPENAI_KEY not in logs

    # A second run downloads and embeds nothing; a changed object alone is fetched again.
    storage.downloads.clear()
    before = len(openai_api.requests)
    state, again = _run()
    assert again.counts == counts(skipped=len(FILES))
    assert storage.downloads == []
    assert len(openai_api.requests) == before

    storage.put(
        "knowledge", "prds/referral-program.md", b"# Referrals v2\n\nInvite three friends.\n"
    )
    state, third = _run()
    assert third.counts == counts(ingested=1, skipped=len(FILES) - 1)
    assert storage.downloads == ["prds/referral-program.md"]


def test_a_missing_object_fails_alone_and_a_flaky_download_is_retried(
    production_env: str, storage: FakeStorage
) -> None:
    storage.fail_next("prds/calendar-export.md", status=503, times=2)
    gone = "prds/analytics-event-taxonomy.txt"
    # Listed, then deleted before its download: the download answers the real 400/404 body.
    storage.fail_next(
        gone,
        status=400,
        times=10,
        body={
            "statusCode": "404",
            "error": "not_found",
            "message": "Object not found",
            "code": "NoSuchKey",
        },
    )
    state, outcome = _run()

    assert state.is_failed()
    [failed] = outcome.summary.failed
    assert failed.path == gone and failed.error_kind == "unreadable" and failed.attempts == 1
    assert storage.downloads.count(gone) <= 1
    flaky = {r.path: r for r in outcome.summary.results}["prds/calendar-export.md"]
    assert (flaky.status, flaky.attempts) == ("ingested", 1)  # quick retries, no task retry
    assert storage.downloads.count("prds/calendar-export.md") == 3


def test_a_bad_openai_key_stops_the_run_after_one_request_before_any_file(
    production_env: str,
    monkeypatch: pytest.MonkeyPatch,
    storage: FakeStorage,
    openai_api: FakeOpenAI,
) -> None:
    from tidal.run import RunStopped

    for i in range(1000):
        storage.put("knowledge", f"prds/notes/note-{i:04d}.md", f"# Note {i}\n\nBody.\n".encode())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")

    state, outcome = _run()

    assert state.is_failed()
    assert isinstance(outcome, RunStopped)
    assert "OPENAI_API_KEY" in state.message and "sk-wrong" not in state.message
    assert openai_api.statuses() == [401]  # the run's check, before any file
    summary = outcome.summary
    assert summary.counts == counts(stopped=1000 + len(FILES))
    with psycopg.connect(production_env) as conn:
        assert conn.execute("select count(*) from ingested_files").fetchone() == (0,)


def test_a_429_is_waited_out_and_a_burst_of_500s_is_retried_until_every_file_lands(
    production_env: str, monkeypatch: pytest.MonkeyPatch, openai_api: FakeOpenAI
) -> None:
    monkeypatch.setenv("TIDAL_CONCURRENCY", "1")  # the first file meets every fault
    openai_api.fail_next(500, times=2)
    openai_api.fail_next(429, times=1, headers={"retry-after-ms": "300"})

    state, summary = _run()

    assert state.is_completed(), state.message
    assert summary.counts == counts(ingested=len(FILES))
    first = {r.path: r for r in summary.results}["designs/Aurora_team/icon-set.json"]
    assert first.attempts == 1  # the 500s were retried quickly, the 429 waited out: no task retry
    statuses = openai_api.statuses()
    assert statuses[:4] == [500, 500, 429, 200]
    assert statuses.count(200) == len(openai_api.requests) - 3


def test_with_30_percent_of_downloads_and_embeddings_failing_every_file_lands_in_one_run(
    production_env: str, storage: FakeStorage, openai_api: FakeOpenAI
) -> None:
    for i in range(60):
        storage.put("knowledge", f"prds/notes/n-{i:02d}.md", f"# Note {i}\n\nBody {i}.\n".encode())
    storage.flaky("object/knowledge/", 0.3, 503, seed=1)  # downloads, not the listing
    openai_api.flaky(0.3, 500, seed=2)

    state, summary = _run()

    assert state.is_completed(), state.message
    assert summary.counts["ingested"] == len(FILES) + 60
    assert storage.injected > 10 and openai_api.statuses().count(500) > 10
    # Quick retries inside each attempt absorb the faults: a task retry is the rare exception
    # (a file needs one only when 5 quick tries in a row fail: 0.3**5, about 1 in 400).
    assert sum(r.attempts > 1 for r in summary.results) <= 2
    assert len(openai_api.inputs_embedded) == len(set(openai_api.inputs_embedded))


def test_the_dry_run_prices_the_tokens_it_would_send_and_sends_none(
    production_env: str, openai_api: FakeOpenAI
) -> None:
    plan = call_flow(dry_run=True)

    assert len(plan.added) == len(FILES) and plan.chunks_to_embed == plan.chunks > 0
    assert plan.tokens_to_embed > 0
    assert plan.cost_usd == pytest.approx(plan.tokens_to_embed * 0.02 / 1_000_000)
    assert openai_api.requests == []
    with psycopg.connect(production_env) as conn:
        assert conn.execute("select count(*) from documents").fetchone() == (0,)

    _, summary = _run()
    # The plan's count was right: the real run embedded exactly those, after its check.
    check, *embedded = openai_api.inputs_embedded
    assert check == "dimension probe" and len(embedded) == plan.chunks_to_embed
    assert sum(r.chunks for r in summary.results) == plan.chunks


@pytest.mark.parametrize(
    ("source", "key", "url", "message"),
    [
        ("supabase://knowledge", "anon", None, "SUPABASE_SERVICE_ROLE_KEY"),
        ("supabase://no-such-bucket", "service", None, "bucket 'no-such-bucket' not found"),
        ("supabase://knowledge", "service", "http://127.0.0.1:9", "check SUPABASE_URL"),
    ],
)
def test_a_wrong_bucket_key_or_url_fails_before_prefect_starts(
    storage: FakeStorage, tmp_path, source: str, key: str, url: str | None, message: str
) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from tests.fakes.storage_server import ANON_KEY
    from tests.test_main import INGEST, _clean_env

    done = subprocess.run(
        INGEST,
        cwd=tmp_path,
        env=_clean_env(
            TIDAL_SOURCE=source,
            SUPABASE_URL=url or storage.url,
            SUPABASE_SERVICE_ROLE_KEY=ANON_KEY if key == "anon" else SERVICE_KEY,
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert message in done.stderr
    assert "Starting temporary server" not in done.stdout + done.stderr
    assert SERVICE_KEY not in done.stdout + done.stderr


def test_the_main_job_lists_once_and_checks_the_key_once_with_work_and_never_without(
    production_env: str, openai_api: FakeOpenAI, storage: FakeStorage
) -> None:
    """``python flows/ingest.py`` with a Prefect server configured: the source is listed before
    the flow, which takes the listing over, and the embedder is checked on the warm-up thread
    only when the run has work; an unchanged run asks nothing."""
    from flows.cli import ingest as ingest_main
    from tidal.embedders.openai import CHECK_TEXT
    from tidal.runtime import close_shared

    assert ingest_main([]) == 0
    checks = [r for r in openai_api.requests if r.get("first") == CHECK_TEXT and r["inputs"] == 1]
    assert len(checks) == 1
    close_shared(embedders=True)  # as the next process would: no check remembered
    before, listed = len(openai_api.requests), storage.list_calls

    assert ingest_main([]) == 0

    assert openai_api.requests[before:] == []
    by_main = storage.list_calls - listed
    state, _ = _run()  # the flow alone lists once
    assert state.is_completed()
    assert by_main == storage.list_calls - listed - by_main > 0
