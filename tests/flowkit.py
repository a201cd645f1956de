"""Helpers for tests that run the real ``tidal`` flow and read the real index."""

from __future__ import annotations

from pathlib import Path

import psycopg

# Written out, not imported from tidal.records: the tests pin the set of statuses a run reports.
STATUSES = ("ingested", "skipped", "failed", "stopped", "ignored")


def run(corpus: Path, **params):  # type: ignore[no-untyped-def]
    from flows.ingest import tidal

    state = tidal(source=str(corpus), return_state=True, **params)
    return state, state.result(raise_on_failure=False)


def chunks_by_path(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(
            conn.execute("select source_path, count(*) from documents group by 1").fetchall()
        )


def file_rows(url: str) -> dict[str, tuple]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select path, status, chunk_count, attempts, error, error_kind from ingested_files"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def counts(**given: int) -> dict[str, int]:
    """A run's whole ``counts`` dict: the statuses named, every other one 0."""
    assert set(given) <= set(STATUSES), given
    return {status: given.get(status, 0) for status in STATUSES}
