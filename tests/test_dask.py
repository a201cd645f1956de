"""One run spread over a real local Dask cluster - two worker processes on loopback - reporting
to a real Prefect server, with the fake OpenAI server and the real Postgres and Redis: every file
lands once, the shared OpenAI budget holds across processes, and a Dask worker killed mid-run
costs nothing but a retry of its files."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.daskkit import OPENAI_KEY, assert_every_file_once, start_ingest
from tests.fakes.openai_server import FakeOpenAI
from tidal.embedders.openai import CHECK_TEXT


@pytest.fixture
def openai_api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=OPENAI_KEY, dimension=1536) as fake:
        yield fake


def _corpus(root: Path, n: int) -> dict[str, str]:
    texts = {}
    for i in range(n):
        path = f"prds/notes/note-{i:03d}.md"
        texts[path] = (
            f"# Note {i}\n\nNote {i} says the sync of group {i} must finish in a minute.\n"
        )
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(texts[path])
    return texts


def _start(
    prefect_api: dict[str, str],
    corpus: Path,
    database_url: str,
    redis_url: str,
    api: FakeOpenAI,
    tmp_path: Path,
    **extra: str,
) -> subprocess.Popen[str]:
    env = {
        **prefect_api,
        "TIDAL_SOURCE": str(corpus),
        "TIDAL_DATABASE_URL": database_url,
        "TIDAL_REDIS_URL": redis_url,
        "TIDAL_DATA_DIR": str(tmp_path / "data"),
        "TIDAL_EMBEDDER": "openai",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": api.base_url,
        "TIDAL_TASK_RUNNER": "dask",
        "TIDAL_DASK_WORKERS": "2",
        "TIDAL_RETRY_DELAY_SECONDS": "0.05",
        **extra,
    }
    return start_ingest(env, tmp_path)


def _result_digest(path: str, text: str) -> str:
    """The digest part of a file's result key (tasks.ingest.file_cache_key)."""
    change_key = hashlib.sha256(text.encode()).hexdigest()
    return hashlib.sha256(f"{path}\x00{change_key}".encode()).hexdigest()


def test_a_dask_run_lands_every_file_once_within_the_shared_budget(
    prefect_api: dict[str, str],
    database_url: str,
    redis_url: str,
    redis_client,  # type: ignore[no-untyped-def]
    openai_api: FakeOpenAI,
    tmp_path: Path,
) -> None:
    texts = _corpus(tmp_path / "corpus", 24)
    # 6 requests per 2 s for the whole cluster, as OpenAI meters it: a bucket of 6 refilling
    # at 3 a second; the server refuses a request the bucket does not hold.
    openai_api.limit(rpm=6, window_seconds=2, model="bucket")
    run = _start(
        prefect_api,
        tmp_path / "corpus",
        database_url,
        redis_url,
        openai_api,
        tmp_path,
        TIDAL_OPENAI_RPM="6",
        TIDAL_OPENAI_WINDOW_SECONDS="2",
        TIDAL_CONCURRENCY="4",
    )
    out, _ = run.communicate(timeout=600)

    assert run.returncode == 0, out[-4000:]
    assert "dask, local cluster of 2 processes" in out
    assert_every_file_once(database_url, texts)
    check, *bought = openai_api.inputs_embedded
    assert check == CHECK_TEXT  # the run's check, once, in the flow process
    # Each bought once, under its context (the title, here the file's name) and a blank line.
    assert sorted(t.split("\n\n", 1)[1] for t in bought) == sorted(texts.values())
    assert set(openai_api.statuses()) == {200}  # no 429: the budget held across processes
    assert OPENAI_KEY not in out
    persisted = {key.decode().rpartition(":")[2] for key in redis_client.keys("tidal:*")}
    assert {_result_digest(path, text) for path, text in texts.items()} <= persisted


def test_a_killed_dask_worker_costs_a_retry_and_nothing_is_duplicated(
    prefect_api: dict[str, str],
    database_url: str,
    redis_url: str,
    openai_api: FakeOpenAI,
    tmp_path: Path,
) -> None:
    texts = _corpus(tmp_path / "corpus", 40)
    openai_api.delay_next(0.4, times=10**6)  # each request takes a while: files are in flight
    run = _start(prefect_api, tmp_path / "corpus", database_url, redis_url, openai_api, tmp_path)
    try:
        deadline = time.monotonic() + 300
        while len(openai_api.statuses()) < 8:
            assert run.poll() is None and time.monotonic() < deadline, "the run never got going"
            time.sleep(0.1)
        workers = [
            p for p in psutil.Process(run.pid).children() if "spawn_main" in " ".join(p.cmdline())
        ]
        assert len(workers) == 2, [p.cmdline() for p in workers]
        workers[0].send_signal(signal.SIGKILL)
        killed_at = len(openai_api.statuses())
        out, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()

    assert run.returncode == 0, out[-4000:]
    assert killed_at < len(texts)  # the kill struck mid-run
    assert_every_file_once(database_url, texts)
