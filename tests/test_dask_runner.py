"""``SharedContextDaskTaskRunner`` pickles what a flow run's tasks share once, not per task,
and pickles it again when the context a task is submitted in changes."""

from __future__ import annotations

import cloudpickle
import pytest
from prefect import tags

pytest.importorskip("prefect_dask")

from tasks.dask_runner import SharedContextDaskTaskRunner  # noqa: E402
from tasks.ingest import ingest_file  # noqa: E402


def test_tasks_submitted_in_one_context_share_one_pickled_context() -> None:
    runner = SharedContextDaskTaskRunner()
    first = runner._shared_for(ingest_file)

    assert runner._shared_for(ingest_file) is first
    loaded = cloudpickle.loads(first[1])
    assert loaded["task"].name == "ingest-file"
    assert "settings_context" in loaded["context"]
    assert "asset_context" not in loaded["context"]  # per task, sent with each


def test_a_new_context_or_task_pickles_the_shared_part_again() -> None:
    runner = SharedContextDaskTaskRunner()
    digest = runner._shared_for(ingest_file)[0]

    with tags("nightly"):
        tagged = runner._shared_for(ingest_file)
    assert tagged[0] != digest
    assert cloudpickle.loads(tagged[1])["context"]["tags_context"]["current_tags"] == {"nightly"}
    retrying = ingest_file.with_options(retries=0)
    assert runner._shared_for(retrying)[0] != runner._shared_for(ingest_file)[0]


@pytest.mark.slow  # a local Dask cluster of its own
def test_a_local_clusters_workers_run_without_dasks_profiler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.runners import task_runner
    from tidal.settings import load_settings

    monkeypatch.setenv("TIDAL_TASK_RUNNER", "dask")
    monkeypatch.setenv("TIDAL_DASK_WORKERS", "2")
    api = {PREFECT_API_URL: "http://127.0.0.1:9/api"}  # asked for, never reached here
    with temporary_settings(updates=api), task_runner(load_settings()) as runner:
        callbacks = runner.client.run(lambda dask_worker: sorted(dask_worker.periodic_callbacks))

    assert len(callbacks) == 2
    for running in callbacks.values():
        assert "heartbeat" in running  # the worker's own upkeep runs
        assert "profile" not in running and "profile-cycle" not in running
