"""Shared fixtures: a real embedded Postgres with pgvector, a real Redis, real Prefect.

Nothing here is mocked: the store tests talk to pgserver's Postgres 16 + pgvector, flow tests
run under Prefect's test harness (a temporary API server) against the Redis on 127.0.0.1:6379,
which `.ci/run` starts when it is not already running.
"""

from __future__ import annotations

import os

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

import psycopg  # noqa: E402
import pytest  # noqa: E402

from tests.services import shared_redis_url  # noqa: E402
from tidal.embedders.local import LocalEmbedder  # noqa: E402
from tidal.settings import SAMPLE_CORPUS  # noqa: E402
from tidal.sources.local import LocalSource  # noqa: E402

REDIS_URL = os.environ.get("TIDAL_TEST_REDIS_URL") or shared_redis_url(0)

pytest_plugins = ("tests.tiers",)  # the fast and slow tiers, and the fast tier's guard


@pytest.fixture(autouse=True)
def _no_tidal_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts from no TIDAL_* configuration, in its own working folder."""
    for key in list(os.environ):
        if key.startswith("TIDAL_") and key != "TIDAL_TEST_REDIS_URL":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _fresh_shared_pipelines() -> Iterator[None]:
    """Pipelines opened by one test (pools on its own database) are closed after it; the
    loaded model is kept: it does not depend on the test."""
    yield
    from tidal.runtime import close_shared

    close_shared()


@pytest.fixture(scope="session")
def pg_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Postgres 16 with pgvector for the whole session (pgserver)."""
    from tidal.store.embedded import embedded_database_url

    data_dir = tmp_path_factory.mktemp("pg")
    yield embedded_database_url(data_dir)


@pytest.fixture
def database_url(pg_base_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's server; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    parts = urlsplit(pg_base_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # a missing service is a failure, never a skip
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); start it (see .ci/run)")
    return client


@pytest.fixture
def redis_url(redis_client) -> str:
    redis_client.flushdb()
    return REDIS_URL


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API server and database for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict[str, str]:
    """The environment of a run that reports to a real Prefect server: the session's (the test
    harness serves Prefect's API from a process of its own, on a port), with its own home."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(
        PREFECT_HOME=str(tmp_path_factory.mktemp("prefect-home")),
        DO_NOT_TRACK="1",
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )
    return env


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2, loaded once."""
    from tidal.embedders.local import LocalEmbedder

    return LocalEmbedder()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small copy of the sample corpus (designs, .md and .txt PRDs), safe to edit.

    Small files on purpose: the real model embeds about ten chunks a second on two cores.
    """
    root = tmp_path / "corpus"
    picks = [
        "designs/Aurora_team/icon-set.json",
        "designs/Borealis_team/route-optimizer.json",
        "prds/calendar-export.md",
        "prds/referral-program.md",
        "prds/analytics-event-taxonomy.txt",
    ]
    for rel in picks:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE_CORPUS / rel, target)
    return root


# --- flow-test fixtures: configuration for the real flow, and counters on the real parts ---


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, prefect_harness: None) -> str:
    """The real flow's configuration: a fresh database, quick retries, the Prefect harness."""
    monkeypatch.setenv("TIDAL_DATABASE_URL", database_url)
    monkeypatch.setenv("TIDAL_RETRY_DELAY_SECONDS", "0.05")
    return database_url


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the real model is asked to embed, in order."""
    texts: list[str] = []
    original = LocalEmbedder.embed

    def counting(self: LocalEmbedder, batch):  # type: ignore[no-untyped-def]
        texts.extend(batch)
        return original(self, batch)

    monkeypatch.setattr(LocalEmbedder, "embed", counting)
    return texts


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the real source reads, in order."""
    paths: list[str] = []
    original = LocalSource.read

    def counting(self: LocalSource, file):  # type: ignore[no-untyped-def]
        paths.append(file.path)
        return original(self, file)

    monkeypatch.setattr(LocalSource, "read", counting)
    return paths
