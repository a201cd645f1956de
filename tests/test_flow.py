"""The ``tidal`` flow end to end: real Prefect (test harness), real Postgres + pgvector, real
Redis, the real model. Faults are injected by wrapping the real source's ``read``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from tests.flowkit import chunks_by_path, counts, file_rows, run
from tidal.errors import TransientError
from tidal.records import RunSummary
from tidal.sources.local import LocalSource

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_full_run_stores_every_chunk_and_a_rerun_embeds_nothing(
    corpus: Path, env: str, embedded: list[str]
) -> None:
    state, summary = run(corpus)
    assert state.is_completed()
    assert isinstance(summary, RunSummary)
    assert summary.counts == counts(ingested=5)
    stored = chunks_by_path(env)
    assert stored == {r.path: r.chunks for r in summary.results}
    assert all(n > 0 for n in stored.values())
    assert len(embedded) == sum(stored.values())
    assert {p: row[0] for p, row in file_rows(env).items()} == dict.fromkeys(stored, "ingested")
    with psycopg.connect(env) as conn:
        (dupes,) = conn.execute(
            "select count(*) from (select 1 from documents"
            " group by source_path, chunk_index having count(*) > 1) d"
        ).fetchone()
    assert dupes == 0

    embedded.clear()
    state, again = run(corpus)
    assert state.is_completed()
    assert again.counts == counts(skipped=5)
    assert embedded == []
    assert chunks_by_path(env) == stored


def test_a_changed_file_is_reingested_and_its_old_chunks_are_gone(
    corpus: Path, env: str, embedded: list[str]
) -> None:
    run(corpus)
    target = corpus / "prds" / "analytics-event-taxonomy.txt"
    target.write_text(
        "QUIET HOURS V2\n\nNotifications are held between 22:00 and 07:00 local time.\n"
    )
    embedded.clear()

    state, summary = run(corpus)

    assert state.is_completed()
    assert summary.counts == counts(ingested=1, skipped=4)
    assert chunks_by_path(env)["prds/analytics-event-taxonomy.txt"] == 1
    with psycopg.connect(env) as conn:
        contents = [
            r[0]
            for r in conn.execute(
                "select content from documents where source_path = %s",
                ("prds/analytics-event-taxonomy.txt",),
            )
        ]
    assert len(contents) == 1 and contents[0].startswith("QUIET HOURS V2")
    assert all("QUIET HOURS V2" in t for t in embedded) and embedded


def test_a_transient_error_is_retried_with_backoff_until_it_succeeds(
    corpus: Path, env: str, monkeypatch: pytest.MonkeyPatch, reads: list[str]
) -> None:
    flaky = "prds/calendar-export.md"
    original = LocalSource.read  # the counting wrapper from ``reads``

    def fail_twice(self: LocalSource, file):  # type: ignore[no-untyped-def]
        data = original(self, file)
        if file.path == flaky and reads.count(flaky) <= 2:
            raise TransientError("storage answered 503", path=file.path)
        return data

    monkeypatch.setattr(LocalSource, "read", fail_twice)
    state, summary = run(corpus)

    assert state.is_completed()
    result = {r.path: r for r in summary.results}[flaky]
    assert (result.status, result.attempts) == ("ingested", 3)
    assert reads.count(flaky) == 3
    assert file_rows(env)[flaky][:3] == ("ingested", result.chunks, 3)


def test_transient_errors_past_the_retry_budget_fail_the_file(
    corpus: Path, env: str, monkeypatch: pytest.MonkeyPatch, reads: list[str]
) -> None:
    original = LocalSource.read

    def always_down(self: LocalSource, file):  # type: ignore[no-untyped-def]
        data = original(self, file)
        if file.path == "prds/referral-program.md":
            raise TransientError("storage timed out", path=file.path)
        return data

    monkeypatch.setattr(LocalSource, "read", always_down)
    monkeypatch.setenv("TIDAL_RETRIES", "2")
    state, outcome = run(corpus)

    assert state.is_failed()
    [failed] = outcome.summary.failed
    assert (failed.path, failed.error_kind, failed.attempts) == (
        "prds/referral-program.md",
        "transient",
        3,
    )
    assert reads.count("prds/referral-program.md") == 3
    assert file_rows(env)["prds/referral-program.md"][0] == "failed"


def test_a_malformed_file_fails_alone_at_once_with_its_reason(
    corpus: Path, env: str, reads: list[str]
) -> None:
    from tidal.run import IngestFailed

    bad = corpus / "designs" / "Delta_team" / "broken.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"title": "Broken", "screens": [')

    state, outcome = run(corpus)

    assert state.is_failed()
    assert "designs/Delta_team/broken.json" in state.message
    assert isinstance(outcome, IngestFailed)
    summary = outcome.summary
    assert summary.counts == counts(ingested=5, failed=1)
    [failed] = summary.failed
    assert failed.path == "designs/Delta_team/broken.json"
    assert failed.error_kind == "permanent" and failed.attempts == 1
    assert "invalid JSON" in failed.error
    assert reads.count("designs/Delta_team/broken.json") == 1  # permanent: never retried
    rows = file_rows(env)
    assert rows["designs/Delta_team/broken.json"][0] == "failed"
    assert "invalid JSON at line 1" in rows["designs/Delta_team/broken.json"][3]
    assert "designs/Delta_team/broken.json" not in chunks_by_path(env)
    assert len(chunks_by_path(env)) == 5


def test_with_redis_set_each_files_result_is_written_there_under_its_change_key(
    corpus: Path, env: str, redis_url: str, redis_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One result per file, at ``tidal:<fingerprint>:<digest of path and content>``, holding
    that file's FileResult. Written for the record only: the next run never reads them
    (``test_an_emptied_database_is_never_mistaken_for_done``)."""
    from prefect.results import ResultRecord

    monkeypatch.setenv("TIDAL_REDIS_URL", redis_url)
    state, summary = run(corpus)
    assert state.is_completed()

    def digest(path: str) -> str:
        content = hashlib.sha256((corpus / path).read_bytes()).hexdigest()
        return hashlib.sha256(f"{path}\x00{content}".encode()).hexdigest()

    keys = sorted(k.decode() for k in redis_client.keys("*"))
    [fingerprint] = {k.split(":")[1] for k in keys}
    by_path = {r.path: r for r in summary.results}
    assert keys == sorted(f"tidal:{fingerprint}:{digest(path)}" for path in by_path)
    for key in keys:
        record = ResultRecord.deserialize(redis_client.get(key))
        assert record.metadata.storage_key == key
        assert record.result == by_path[record.result.path]
        # kept as long as the server keeps the task run, not forever (Redis is all memory)
        assert 29 * 86400 < redis_client.ttl(key) <= 30 * 86400


def test_an_emptied_database_is_never_mistaken_for_done(
    corpus: Path, env: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDAL_REDIS_URL", redis_url)
    run(corpus)
    before = chunks_by_path(env)
    with psycopg.connect(env) as conn:
        conn.execute("truncate documents, ingested_files")

    state, summary = run(corpus)  # Redis still holds every cached result

    assert summary.counts == counts(ingested=5)
    assert chunks_by_path(env) == before


def test_parameters_override_the_environment(
    corpus: Path, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDAL_CHUNK_TOKENS", "400")
    _, default = run(corpus, chunk_tokens=64, chunk_overlap=8)
    with psycopg.connect(env) as conn:
        (longest,) = conn.execute(
            "select max((metadata->>'tokens')::int) from documents"
        ).fetchone()
    assert longest <= 64
    assert default.chunks > 30


def _flow_run_events(flow_run_id: str) -> list[str]:
    """The names of the events the server recorded for one flow run, once it has its last."""
    import time

    from prefect import get_client

    query = {
        "filter": {
            "event": {"prefix": ["prefect.flow-run."]},
            "any_resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 50,
    }
    names: list[str] = []
    for _ in range(60):
        with get_client(sync_client=True) as client:
            found = client.request("POST", "/events/filter", json=query).json()["events"]
        names = [event["event"] for event in found]
        if "prefect.flow-run.Completed" in names:
            return names
        time.sleep(0.5)
    return names


@pytest.mark.parametrize("frequency", [None, 60])
def test_a_run_by_hand_sends_heartbeats_only_when_they_are_asked_for(
    corpus: Path, env: str, monkeypatch: pytest.MonkeyPatch, frequency: int | None
) -> None:
    """Heartbeats serve deployments' runs (an automation marks a silent one Crashed);
    ``python flows/ingest.py`` sends none unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY says so."""
    from prefect import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.cli import ingest as ingest_main

    monkeypatch.setenv("TIDAL_SOURCE", str(corpus))
    asked = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: frequency} if frequency else {}
    with temporary_settings(updates=asked):
        assert ingest_main([]) == 0
    with get_client(sync_client=True) as client:
        [latest] = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)

    events = _flow_run_events(str(latest.id))

    assert "prefect.flow-run.Completed" in events
    assert ("prefect.flow-run.heartbeat" in events) == (frequency is not None)
