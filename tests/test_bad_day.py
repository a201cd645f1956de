"""A bad day on the production path: Storage or the embeddings API killed mid-run, a 429 storm
from a server whose limit is far below the configured budget.

The real flow (Prefect's test harness) reads a bucket on the fake Storage server through the
real ``supabase`` client and embeds through the real ``openai`` client on the fake OpenAI
server, into the real Postgres. Task retries are cut to one, so a file that spent its attempts
on an outage or a 429 would fail: every file must land, once, in one run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.storage_server import FakeStorage
from tests.flowkit import call_flow, chunks_by_path, counts

pytestmark = pytest.mark.usefixtures("prefect_harness")

SERVICE_KEY = "service-role-key-of-the-bad-day"
OPENAI_KEY = "sk-bad-day"
STORAGE_DOWN = 3.0
API_DOWN = 6.0
"""Seconds each server stays killed: past what a call's quick retries wait in all (a read's at
most 1.5 s, an embedding request's 3 s), so without the outage gate a file would spend its
second attempt on it."""
FILES = {
    f"prds/note-{i:02d}.md": f"# Note {i}\n\nNote {i} says {i * 7} things.\n" for i in range(24)
}


@pytest.fixture
def storage() -> Iterator[FakeStorage]:
    with FakeStorage(service_key=SERVICE_KEY) as fake:
        for path, text in FILES.items():
            fake.put("knowledge", path, text.encode())
        yield fake


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture
def bad_day_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, storage: FakeStorage, api: FakeOpenAI
) -> str:
    for name, value in {
        "TIDAL_SOURCE": "supabase://knowledge/prds",
        "SUPABASE_URL": storage.url,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "TIDAL_EMBEDDER": "openai",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": api.base_url,
        "TIDAL_DATABASE_URL": database_url,
        "TIDAL_RETRIES": "1",
        "TIDAL_RETRY_DELAY_SECONDS": "0.2",
        "TIDAL_CONCURRENCY": "4",
    }.items():
        monkeypatch.setenv(name, value)
    return database_url


def _run():  # type: ignore[no-untyped-def]
    state = call_flow(return_state=True)
    return state, state.result(raise_on_failure=False)


def _outage_when(
    ready: Callable[[], bool],
    kill: Callable[[], None],
    revive: Callable[[], None],
    seconds: float,
    over: threading.Event | None = None,
) -> tuple[threading.Thread, dict[str, float]]:
    """A thread that kills a server once ``ready()``, and revives it ``seconds`` later, or as
    soon as ``over`` is set."""
    seen: dict[str, float] = {}
    over = over or threading.Event()

    def outage() -> None:
        while not ready():
            time.sleep(0.02)
        kill()
        seen["killed"] = time.monotonic()
        over.wait(seconds)
        revive()
        seen["revived"] = time.monotonic()

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    return thread, seen


def _assert_every_file_once(database_url: str) -> None:
    assert chunks_by_path(database_url) == dict.fromkeys(FILES, 1)
    with psycopg.connect(database_url) as conn:
        stored = dict(conn.execute("select source_path, content from documents").fetchall())
        failures = conn.execute("select count(*) from ingested_files where status <> 'ingested'")
        assert failures.fetchone() == (0,)
    assert stored == FILES


def test_storage_killed_mid_run_is_waited_out_and_every_file_lands_once(
    bad_day_env: str, storage: FakeStorage, api: FakeOpenAI
) -> None:
    api.delay_next(0.1, times=10**6)  # files in flight when it dies
    thread, seen = _outage_when(
        lambda: len(storage.downloads) >= 6, storage.kill, storage.revive, STORAGE_DOWN
    )

    state, summary = _run()
    thread.join(timeout=30)

    assert seen["revived"] - seen["killed"] >= STORAGE_DOWN
    assert state.is_completed(), state.message
    assert summary.counts == counts(ingested=len(FILES))
    assert all(r.attempts == 1 for r in summary.results)  # the outage cost no file an attempt
    assert sorted(storage.downloads) == sorted(FILES)  # and no download twice
    _assert_every_file_once(bad_day_env)


def test_the_embeddings_api_killed_mid_run_is_waited_out(
    bad_day_env: str, storage: FakeStorage, api: FakeOpenAI
) -> None:
    api.delay_next(0.1, times=10**6)
    thread, seen = _outage_when(lambda: len(api.requests) >= 6, api.kill, api.revive, API_DOWN)

    state, summary = _run()
    thread.join(timeout=30)

    assert seen["revived"] - seen["killed"] >= API_DOWN
    assert state.is_completed(), state.message
    assert summary.counts == counts(ingested=len(FILES))
    assert all(r.attempts == 1 for r in summary.results)
    assert sorted(storage.downloads) == sorted(FILES)
    _assert_every_file_once(bad_day_env)


def test_an_outage_past_the_limit_stops_the_run_keeping_what_is_done(
    bad_day_env: str, storage: FakeStorage, api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past TIDAL_OUTAGE_SECONDS the run stops (ServiceDown names the variable), with the
    files done kept and none recorded as failed; the next run finishes the rest."""
    monkeypatch.setenv("TIDAL_OUTAGE_SECONDS", "2")
    api.delay_next(0.1, times=10**6)
    stopped_run = threading.Event()  # the API comes back once the run has stopped
    thread, _ = _outage_when(lambda: len(api.requests) >= 6, api.kill, api.revive, 60, stopped_run)

    state, stopped = _run()
    stopped_run.set()

    assert not state.is_completed()
    summary = stopped.summary  # RunStopped carries it
    assert summary.stopped and "OPENAI_BASE_URL" in summary.stopped
    assert "TIDAL_OUTAGE_SECONDS" in summary.stopped
    assert summary.counts["failed"] == 0
    done = summary.counts["ingested"]
    assert 0 < done < len(FILES)
    with psycopg.connect(bad_day_env) as conn:
        rows = dict(conn.execute("select status, count(*) from ingested_files group by 1"))
    assert rows == {"ingested": done}  # nothing recorded as failed, permanent or not

    thread.join(timeout=30)
    state, again = _run()
    assert state.is_completed(), state.message
    assert again.counts == counts(ingested=len(FILES) - done, skipped=done)
    _assert_every_file_once(bad_day_env)


def test_a_429_storm_from_a_lower_limit_is_learned_and_every_file_lands(
    bad_day_env: str, api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server allows 8 requests per 2 s window (sliding), the budget is left at its
    default (3,000 per window): 429s at first, then the budget learns the real rate and they
    stop. No 429 ever spends an attempt."""
    window = 2.0
    monkeypatch.setenv("TIDAL_OPENAI_WINDOW_SECONDS", str(int(window)))
    api.limit(rpm=8, window_seconds=window, model="window")

    state, summary = _run()

    assert state.is_completed(), state.message
    assert summary.counts == counts(ingested=len(FILES))
    assert all(r.attempts == 1 for r in summary.results)
    statuses = [(r["time"], r["status"]) for r in api.requests]
    start = statuses[0][0]
    storm = sum(1 for t, s in statuses if s == 429 and t < start + 2 * window)
    after = sum(1 for t, s in statuses if s == 429 and t >= start + 2 * window)
    assert storm > 0  # the default budget did run into the lower limit
    assert after <= 2, statuses  # and then it learned it
