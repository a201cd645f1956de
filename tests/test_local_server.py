"""The local Prefect server ad hoc runs start once and share (flows/server.py): real
``prefect server start`` processes, each with a Prefect home of the test's own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows import server as local_server
from tests.fakes.openai_server import FakeOpenAI
from tidal.settings import REPO_ROOT

KEY = "sk-local-server-test"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    folder = tmp_path / "data"
    yield folder
    local_server.stop(folder)  # whatever a failing test left running


def _dead(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not local_server._alive(pid):  # reaps it too, when this process started it
            return True
        time.sleep(0.1)
    return False


def test_concurrent_starts_make_one_server_and_a_killed_one_is_replaced(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # a secret the long-lived server must not hold
    elsewhere = data_dir.parent / "another-data-folder"
    try:
        with ThreadPoolExecutor(3) as pool:
            starts = [pool.submit(local_server.ensure, data_dir) for _ in range(2)]
            while not (data_dir / local_server.LOG).exists():  # launched, not yet listening
                assert not any(start.done() for start in starts), starts[0].result()
                time.sleep(0.01)
            other = pool.submit(local_server.ensure, elsewhere).result()
            first, second = (start.result() for start in starts)
        assert first == second  # one server, though two runs asked at once
        assert local_server.running(data_dir) == first
        # Another folder's run starting meanwhile gets a server of its own on another port
        # (not the first one's, found answering on the port it meant to take).
        assert other.port != first.port and local_server.running(elsewhere) == other
    finally:
        local_server.stop(elsewhere)
    with urllib.request.urlopen(f"{first.api_url}/health", timeout=5) as answer:
        assert answer.status == 200
    assert KEY not in Path(f"/proc/{first.pid}/environ").read_bytes().decode(errors="replace")
    # Below the runs it records, every thread of it (each inherits its creator's niceness).
    threads = [int(tid) for tid in os.listdir(f"/proc/{first.pid}/task")]
    assert len(threads) > 1
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert {os.getpriority(os.PRIO_PROCESS, t) - mine for t in threads} == {local_server.NICENESS}

    os.killpg(first.pid, signal.SIGKILL)  # a reboot, an OOM kill: the record goes stale
    assert _dead(first.pid)
    assert local_server.running(data_dir) is None
    replacement = local_server.ensure(data_dir)
    assert replacement.pid != first.pid and local_server.running(data_dir) == replacement

    # A server started by another Prefect version (an upgrade since) is stopped and replaced.
    record = data_dir / local_server.STATE
    record.write_text(json.dumps({**json.loads(record.read_text()), "prefect": "0.0.1"}))
    assert local_server.running(data_dir) is None
    upgraded = local_server.ensure(data_dir)
    assert _dead(replacement.pid) and upgraded.pid != replacement.pid

    assert local_server.stop(data_dir) == upgraded
    assert _dead(upgraded.pid)
    assert local_server.running(data_dir) is None and local_server.stop(data_dir) is None


def test_ad_hoc_runs_report_to_one_server_that_outlives_them(
    data_dir: Path, tmp_path: Path, database_url: str
) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "prds").mkdir(parents=True)
    (corpus / "prds" / "a.md").write_text("# A\n\nThe first note.\n")
    (corpus / "prds" / "b.md").write_text("# B\n\nThe second note.\n")
    with FakeOpenAI(api_key=KEY) as api:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
        env.update(
            PREFECT_HOME=os.environ["PREFECT_HOME"],
            TIDAL_SOURCE=str(corpus),
            TIDAL_DATABASE_URL=database_url,
            TIDAL_DATA_DIR=str(data_dir),
            TIDAL_EMBEDDER="openai",
            OPENAI_API_KEY=KEY,
            OPENAI_BASE_URL=api.base_url,
        )

        def python(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
            """``python *command`` as a user runs it, in this environment; it must succeed."""
            done = subprocess.run(
                [sys.executable, *command],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
            return done

        def ingest() -> subprocess.CompletedProcess[str]:
            return python(str(REPO_ROOT / "flows" / "ingest.py"), timeout=300)

        first = ingest()
        assert "starting a local Prefect server" in first.stdout
        server = local_server.running(data_dir)
        assert server is not None  # still running after the run's process exited
        assert f"Prefect UI at {server.ui_url}" in first.stdout

        (corpus / "prds" / "b.md").write_text("# B\n\nThe second note, edited.\n")
        second = ingest()
        assert "starting a local Prefect server" not in second.stdout
        assert local_server.running(data_dir) == server  # the same process, found running

        request = urllib.request.Request(
            f"{server.api_url}/flow_runs/filter",
            data=json.dumps({"flows": {"name": {"any_": ["tidal"]}}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            runs = json.load(answer)
        assert sorted(r["state_type"] for r in runs) == ["COMPLETED", "COMPLETED"]  # both, kept

        status = python("-m", "flows.cli", "status")
        [last] = [r for r in runs if r["start_time"] == max(x["start_time"] for x in runs)]
        assert f"{server.ui_url}/runs/flow-run/{last['id']}" in status.stdout  # a link that works

        # A run spread over a 2-process local Dask cluster, by hand: its workers report their
        # task runs to the same local server (the run's API, handed to them).
        (corpus / "prds" / "a.md").write_text("# A\n\nThe first note, edited.\n")
        env.update(TIDAL_TASK_RUNNER="dask", TIDAL_DASK_WORKERS="2")
        spread = ingest()
        assert "ingested 1, skipped 1" in spread.stdout
        assert (
            "'task runner': 'dask, local cluster of 2 processes'" in spread.stdout + spread.stderr
        )
        assert "distributed.worker" not in spread.stdout + spread.stderr  # no worker banners
        assert local_server.running(data_dir) == server
        query = {"task_runs": {"name": {"any_": ["prds/a.md"]}}}
        deadline = time.monotonic() + 30
        while True:  # the server records task runs from events, a moment after they are sent
            request = urllib.request.Request(
                f"{server.api_url}/task_runs/filter",
                data=json.dumps(query).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                states = sorted(t["state_type"] for t in json.load(answer))
            if states == ["COMPLETED", "COMPLETED"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert states == ["COMPLETED", "COMPLETED"]  # the first run's, and the Dask worker's

        stopped = python("-m", "flows.cli", "server", "stop")
        assert f"pid {server.pid}" in stopped.stdout
    assert _dead(server.pid)


def test_on_another_port_the_ui_asks_its_own_api_and_keeps_its_own_database(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data_dir.parent)  # a relative data folder, as TIDAL_DATA_DIR's default is
    data_dir = Path(data_dir.name)
    with socket.socket() as taken:  # someone else's server on the preferred port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        preferred = taken.getsockname()[1]
        monkeypatch.setattr(local_server, "PREFERRED_PORT", preferred)
        server = local_server.ensure(data_dir)
    assert server.port != preferred
    with urllib.request.urlopen(f"{server.ui_url}/ui-settings", timeout=10) as answer:
        assert json.load(answer)["api_url"] == server.api_url  # every "View at" link works
    assert (data_dir / local_server.DATABASE).is_file()
    assert not (Path(os.environ["PREFECT_HOME"]) / "prefect.db").exists()


def test_a_server_that_will_not_start_is_a_clear_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ports tried, then one message naming the log and the two ways around it."""
    tried: list[int] = []

    def exits_at_once(folder: Path, port: int) -> subprocess.Popen[bytes]:
        tried.append(port)
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    monkeypatch.setattr(local_server, "_launch", exits_at_once)
    # A stale record whose pid now belongs to an unrelated process (a reboot, a new container).
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    data_dir.mkdir(parents=True)
    (data_dir / local_server.STATE).write_text(
        json.dumps({"pid": bystander.pid, "port": 4200, "prefect": "3.9.1"})
    )
    try:
        with pytest.raises(local_server.ServiceDown) as raised:
            local_server.ensure(data_dir)
        assert bystander.poll() is None  # never signalled: it is not the recorded server
    finally:
        bystander.kill()
        bystander.wait()
    assert len(tried) == 2
    message = str(raised.value)
    assert "exited with status 3" in message and str(data_dir / local_server.LOG) in message
    assert "PREFECT_API_URL" in message and "TIDAL_PREFECT_SERVER=temporary" in message
    assert local_server.running(data_dir) is None
