"""Postgres goes away mid-run and comes back: the run waits it out and every file lands once.

The database is a Postgres 16 with pgvector of the test's own (tests/services.py), on a port of
its own, stopped for ``DOWN`` seconds while the real flow (Prefect test harness, fake OpenAI
answering slowly enough that files are in flight) is mid-corpus, then started again. The store's
outage gate holds the work (tidal.retrying): no file spends its one attempt on the outage.

A call's quick retries alone ride out an outage of two or three waits for a pool connection, so
the test shortens that wait and checks the gate itself held the work, and let it go.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.flowkit import chunks_by_path, file_rows, run
from tests.services import OwnPostgres
from tidal.store.postgres import connection

pytestmark = pytest.mark.usefixtures("prefect_harness")

POOL_WAIT = 1.0
DOWN = 10 * POOL_WAIT  # longer than a call's five quick tries (STATEMENTS) ride out
KEY = "sk-outage-test"


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[OwnPostgres]:
    with OwnPostgres(tmp_path / "own-pg") as pg:
        yield pg


def test_a_postgres_outage_mid_run_is_waited_out_and_every_file_lands_once(
    postgres: OwnPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(connection, "POOL_WAIT_SECONDS", POOL_WAIT)
    gate_log = logging.getLogger("tidal.retrying")  # Prefect's logging keeps it from the root
    monkeypatch.setattr(gate_log, "handlers", [*gate_log.handlers, caplog.handler])
    corpus = tmp_path / "corpus"
    texts = {f"prds/n-{i:02d}.md": f"# Note {i}\n\nNote {i} body text.\n" for i in range(40)}
    for rel, text in texts.items():
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        (corpus / rel).write_text(text)

    with FakeOpenAI(api_key=KEY) as api:
        api.delay_next(0.25, times=10**6)
        for name, value in {
            "TIDAL_DATABASE_URL": postgres.url,
            "TIDAL_EMBEDDER": "openai",
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": api.base_url,
            "TIDAL_RETRIES": "0",  # a file whose attempt failed would fail the test
        }.items():
            monkeypatch.setenv(name, value)
        outage: dict[str, float] = {}

        def pull_the_plug() -> None:
            while len(api.requests) < 8:
                time.sleep(0.05)
            postgres.stop()
            outage["at"] = len(api.requests)
            time.sleep(DOWN)
            postgres.start()

        plug = threading.Thread(target=pull_the_plug, daemon=True)
        plug.start()
        state, summary = run(corpus)
        plug.join(timeout=DOWN + 60)

    assert outage["at"] < len(texts)  # the outage struck mid-run
    gate = [r.getMessage() for r in caplog.records if r.name == "tidal.retrying"]
    assert any(m.startswith("Postgres does not answer") for m in gate), gate  # held the work
    assert any(m.startswith("Postgres answers again") for m in gate), gate  # and let it go
    assert state.is_completed(), state.message
    assert summary.counts["failed"] == 0 and summary.counts["stopped"] == 0
    assert chunks_by_path(postgres.url) == dict.fromkeys(texts, 1)
    assert {p: row[0] for p, row in file_rows(postgres.url).items()} == dict.fromkeys(
        texts, "ingested"
    )
    with psycopg.connect(postgres.url) as conn:
        stored = dict(conn.execute("select source_path, content from documents").fetchall())
    assert stored == texts

    state, again = run(corpus)  # and the next run is a normal one
    assert again.counts["skipped"] == len(texts)
