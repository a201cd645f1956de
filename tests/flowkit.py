"""Helpers for tests that run the real ``tidal`` flow and read the real index."""

from __future__ import annotations

from pathlib import Path

import psycopg

# Written out, not imported from tidal.records: the tests pin the set of statuses a run reports.
STATUSES = ("ingested", "skipped", "failed", "stopped", "ignored")


def run(corpus: Path, **params):  # type: ignore[no-untyped-def]
    """The flow over ``corpus``, in this process: its state and its result."""
    state = call_flow(source=str(corpus), return_state=True, **params)
    return state, state.result(raise_on_failure=False)


def call_flow(**params):  # type: ignore[no-untyped-def]
    """``tidal(**params)`` in this process, with no flow-run heartbeats.

    Heartbeats serve deployments' runs (tests/test_deployment.py runs them so). In process,
    Prefect joins the heartbeat thread at the end of every run while it sleeps out its current
    second: up to a second a run, most of an unchanged run's time. ``python flows/ingest.py``
    sends none either (flows/adhoc.py); tests/test_flow.py checks that.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.ingest import tidal

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return tidal(**params)


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
