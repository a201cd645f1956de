"""One run sent to a Dask cluster started apart from it, as deployments/docker-compose.yml runs
one: a `dask scheduler` and two `dask worker` processes, each in a folder and an environment of
its own (its own secrets, no shared working directory), the files in a Supabase Storage bucket
(the fake server, read by the real `supabase` client), embeddings from the fake OpenAI server
under the shared Redis budget, task runs reported to a real Prefect server. Every file lands
once and is downloaded once, a worker killed mid-run costs only a retry, and a worker whose own
key leads to another model refuses its files with the message docs/scaling.md promises."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.daskkit import OPENAI_KEY, assert_every_file_once, start_ingest
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.storage_server import SERVICE_KEY, FakeStorage
from tidal.settings import REPO_ROOT

BUCKET = "knowledge"
DASK = str(Path(sys.executable).with_name("dask"))
OTHER_KEY = "sk-another-deployment"
"""A key the fake server answers with another width for the same model name."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A scheduler and the worker processes a test adds, each in its own session (a worker is
    its nanny plus the process it runs: killing the session kills the machine, as it were)."""

    root: Path
    address: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_scheduler(self) -> None:
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self._spawn(
            "scheduler",
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            {"PATH": os.environ["PATH"]},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, self.log("scheduler")
                time.sleep(0.2)

    def start_worker(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        command = [DASK, "worker", self.address, "--name", name, "--nworkers", "1"]
        command += ["--nthreads", "2", "--no-dashboard", "--local-directory", "."]
        return self._spawn(name, command, env)

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n, timeout=120)

    def log(self, name: str) -> str:
        return (self.root / name / "out.log").read_text(errors="replace")[-3000:]

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        folder = self.root / name
        folder.mkdir(parents=True)
        with (folder / "out.log").open("wb") as out:
            process = subprocess.Popen(
                command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            kill(process, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill(process, signal.SIGKILL)
                process.wait(timeout=10)


def kill(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process's whole session: a worker's nanny and the process it runs."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, sig)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path / "cluster")
    started.start_scheduler()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def storage() -> Iterator[FakeStorage]:
    with FakeStorage() as fake:
        yield fake


def _bucket(storage: FakeStorage, n: int) -> dict[str, str]:
    texts = {}
    for i in range(n):
        path = f"prds/note-{i:03d}.md"
        texts[path] = f"# Note {i}\n\nNote {i} says group {i} must sync within a minute.\n"
        storage.put(BUCKET, path, texts[path].encode(), "text/markdown")
    return texts


def _worker_env(
    home: Path, prefect: dict[str, str], database_url: str, redis_url: str, **secrets: str
) -> dict[str, str]:
    """What a compose dask-worker's environment holds, and nothing of the test's: the Prefect
    server, the database, Redis and the keys."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        # The code under test: in CI the checkout is installed (editable) into this interpreter
        # already; here the interpreter's install may point at another checkout.
        "PYTHONPATH": str(REPO_ROOT),
        "DO_NOT_TRACK": "1",
        "PREFECT_API_URL": prefect["PREFECT_API_URL"],
        "PREFECT_HOME": str(home / "prefect"),
        "TIDAL_DATABASE_URL": database_url,
        "TIDAL_REDIS_URL": redis_url,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "OPENAI_API_KEY": OPENAI_KEY,
        **secrets,
    }


def _run(
    prefect: dict[str, str],
    cluster: Cluster,
    storage: FakeStorage,
    api: FakeOpenAI,
    database_url: str,
    redis_url: str,
    folder: Path,
    **extra: str,
) -> subprocess.Popen[str]:
    folder.mkdir()
    env = {
        **prefect,
        "TIDAL_SOURCE": f"supabase://{BUCKET}/prds",
        "SUPABASE_URL": storage.url,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "TIDAL_DATABASE_URL": database_url,
        "TIDAL_REDIS_URL": redis_url,
        "TIDAL_EMBEDDER": "openai",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": api.base_url,
        "TIDAL_TASK_RUNNER": "dask",
        "TIDAL_DASK_ADDRESS": cluster.address,
        "TIDAL_RETRY_DELAY_SECONDS": "0.05",
        "TIDAL_DATA_DIR": str(folder / "data"),
        **extra,
    }
    return start_ingest(env, folder)


def _fingerprints(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select distinct fingerprint from ingested_files").fetchall()
    return {fingerprint for (fingerprint,) in rows}


def test_a_run_on_an_external_cluster_lands_every_file_once_through_a_killed_worker(
    prefect_api: dict[str, str],
    database_url: str,
    redis_url: str,
    cluster: Cluster,
    storage: FakeStorage,
    tmp_path: Path,
) -> None:
    texts = _bucket(storage, 30)
    secrets = (prefect_api, database_url, redis_url)
    doomed = cluster.start_worker("worker-a", _worker_env(tmp_path / "cluster/worker-a", *secrets))
    # Left over from another deployment: the run's settings, not these, decide the pipeline.
    stale = {"TIDAL_EMBEDDING_MODEL": "text-embedding-3-large", "TIDAL_CHUNK_TOKENS": "100"}
    cluster.start_worker("worker-b", _worker_env(tmp_path / "cluster/worker-b", *secrets, **stale))
    cluster.wait_for_workers(2)

    with FakeOpenAI(api_key=OPENAI_KEY) as api:
        # 10 requests per 2 s for the whole cluster, as OpenAI meters it; each answer takes a
        # while, so files are in flight on both workers when one dies.
        api.limit(rpm=10, window_seconds=2, model="bucket")
        api.delay_next(0.3, times=10**6)
        run = _run(
            prefect_api, cluster, storage, api, database_url, redis_url, tmp_path / "flow",
            TIDAL_OPENAI_RPM="10", TIDAL_OPENAI_WINDOW_SECONDS="2", TIDAL_CONCURRENCY="8",
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while len(api.statuses()) < 8:
                assert run.poll() is None and time.monotonic() < deadline, "never got going"
                time.sleep(0.1)
            kill(doomed, signal.SIGKILL)
            killed_at = len(api.statuses())
            out, _ = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
        statuses, models = api.statuses(), {r.get("model") for r in api.requests}

    assert run.returncode == 0, out[-4000:] + cluster.log("worker-b")
    assert "dask at " + cluster.address in out
    assert killed_at < len(texts)  # the kill struck mid-run
    assert_every_file_once(database_url, texts)
    assert len(_fingerprints(database_url)) == 1
    assert models == {"text-embedding-3-small"}  # the run's model, on both workers
    assert set(statuses) == {200}  # no 429: the budget held across processes
    downloads = Counter(storage.downloads)
    assert set(downloads) == set(texts)
    # Once each, but for what the killed worker's two threads had in hand.
    assert sum(downloads.values()) - len(texts) <= 2, downloads
    assert OPENAI_KEY not in out and SERVICE_KEY not in out


def test_a_worker_whose_key_leads_to_another_model_refuses_its_files(
    prefect_api: dict[str, str],
    database_url: str,
    redis_url: str,
    cluster: Cluster,
    storage: FakeStorage,
    tmp_path: Path,
) -> None:
    _bucket(storage, 8)
    secrets = (prefect_api, database_url, redis_url)
    cluster.start_worker("worker-a", _worker_env(tmp_path / "cluster/worker-a", *secrets))
    other = _worker_env(tmp_path / "cluster/worker-b", *secrets, OPENAI_API_KEY=OTHER_KEY)
    cluster.start_worker("worker-b", other)
    cluster.wait_for_workers(2)

    # A gateway serving "gateway-embed" at 1536 to the run's key and at 768 to the other.
    with FakeOpenAI(api_key=OPENAI_KEY, other_keys={OTHER_KEY: 768}) as api:
        run = _run(
            prefect_api, cluster, storage, api, database_url, redis_url, tmp_path / "flow",
            TIDAL_EMBEDDING_MODEL="gateway-embed",
        )  # fmt: skip
        out, _ = run.communicate(timeout=300)

    refused = re.search(r"this worker builds pipeline \w+ but the run's is (\w+): give", out)
    assert refused, out[-4000:]
    assert run.returncode != 0
    assert _fingerprints(database_url) <= {refused[1]}  # nothing under the other pipeline
