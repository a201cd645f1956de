"""The deployment for real: a Prefect server on a free port with its own home, the `tidal`
process pool, `prefect deploy --all` from prefect.yaml, a worker, and
`prefect deployment run tidal/ingest`, all through `scripts/stack.sh` as a user would.

The worker embeds through the fake OpenAI server in this process: loading the local model in
each flow run's process was most of a run's time here, and proves nothing about deployments
(tests/test_main.py and tests/test_wheel.py run the model in a process of their own)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.services import free_port
from tidal.settings import REPO_ROOT, SAMPLE_CORPUS

WORKER_CONCURRENCY = 3
"""TIDAL_CONCURRENCY in the worker's environment: what a run with no concurrency parameter uses."""
OPENAI_KEY = "sk-deployment-test"


@pytest.fixture(scope="module")
def openai_api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def stack_database(pg_base_url: str) -> Iterator[str]:
    """One database for the module's stack: the worker's TIDAL_DATABASE_URL cannot change."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield urlunsplit(urlsplit(pg_base_url)._replace(path=f"/{name}"))
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, stack_database: str, openai_api: FakeOpenAI
) -> Iterator[dict[str, str]]:
    """One server and worker for every test here: starting them costs most of a test's time."""
    tmp_path = tmp_path_factory.mktemp("stack")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(
        PYTHON=sys.executable,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        TIDAL_PREFECT_PORT=str(port),
        TIDAL_STACK_DIR=str(tmp_path / "stack"),
        TIDAL_DATABASE_URL=stack_database,  # the worker's environment: secrets live here
        TIDAL_DATA_DIR=str(tmp_path / "data"),
        TIDAL_CONCURRENCY=str(WORKER_CONCURRENCY),
        TIDAL_EMBEDDER="openai",
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=openai_api.base_url,
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        # The worker and a served deployment ask for scheduled runs every 10 s by default: each
        # run here would wait 5 s on average before a process took it.
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    script = ["bash", str(REPO_ROOT / "scripts" / "stack.sh")]
    up = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env
    finally:
        pids = [
            int((tmp_path / "stack" / f"{name}.pid").read_text())
            for name in ("server", "worker")
            if (tmp_path / "stack" / f"{name}.pid").exists()
        ]
        subprocess.run([*script, "stop"], env=env, timeout=60)
        for pid in pids:  # every process the stack started is gone
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                continue
            os.killpg(pid, signal.SIGKILL)
            pytest.fail(f"process group {pid} survived `stack.sh stop`")


PREFECT = [sys.executable, "-m", "prefect"]


def _corpus(folder: Path, *picks: str, broken: str | None = None) -> Path:
    """A folder with these files of the sample corpus, and ``broken`` as invalid JSON."""
    for rel in picks:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE_CORPUS / rel, folder / rel)
    if broken:
        (folder / broken).parent.mkdir(parents=True, exist_ok=True)
        (folder / broken).write_text('{"title": "Broken", "screens": [')
    return folder


def _deployment_run(
    env: dict[str, str], *params: str, watch: bool = True, name: str = "tidal/ingest"
) -> tuple[int, str, str]:
    """``prefect deployment run tidal/ingest --param ...``: exit code, output, flow run id."""
    args = [arg for param in params for arg in ("--param", param)]
    done = subprocess.run(
        [*PREFECT, "deployment", "run", name, *args, *(["--watch"] if watch else [])],
        env={**env, "COLUMNS": "1000"},  # --watch's lines unwrapped
        capture_output=True,
        text=True,
        timeout=600,
    )
    found = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, done.stdout + done.stderr, found.group(1)


def _logs(env: dict[str, str], flow_run_id: str) -> str:
    """Every log line of the flow run, as the server stored it."""
    answer = httpx.post(
        f"{env['PREFECT_API_URL']}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200},
        timeout=30,
    )
    answer.raise_for_status()
    return "\n".join(line["message"] for line in answer.json())


def _flow_run(env: dict[str, str], flow_run_id: str) -> dict:
    answer = httpx.get(f"{env['PREFECT_API_URL']}/flow_runs/{flow_run_id}", timeout=30)
    answer.raise_for_status()
    return answer.json()


def test_the_stack_refuses_a_server_it_did_not_start(tmp_path: Path) -> None:
    """Someone else's server on the stack's port: no pool, deployment or worker goes there."""
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        asked: list[str] = []

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            Health.asked.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(
        PYTHON=sys.executable,
        TIDAL_PREFECT_PORT=str(other.server_address[1]),
        TIDAL_STACK_DIR=str(tmp_path / "stack"),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
    )
    try:
        up = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "stack.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        other.shutdown()
    assert up.returncode == 1, up.stdout + up.stderr
    assert "a server this script did not start answers at" in up.stderr
    assert "TIDAL_PREFECT_PORT" in up.stderr
    assert Health.asked == ["/api/health"]  # asked if it lives, and nothing else
    assert not (tmp_path / "stack" / "worker.pid").exists()


def test_prefect_deployment_run_ingests_and_the_deployment_is_scheduled_daily(
    stack: dict[str, str], stack_database: str, tmp_path: Path
) -> None:
    corpus = _corpus(
        tmp_path / "corpus", "prds/referral-program.md", "designs/Aurora_team/icon-set.json"
    )

    code, out, flow_run_id = _deployment_run(stack, f"source={corpus}")

    assert code == 0, out[-3000:]
    assert "Flow run finished successfully in 'Completed'" in out
    # prefect.yaml leaves concurrency unset: the run defers to the worker's TIDAL_CONCURRENCY
    assert f"'concurrency': '{WORKER_CONCURRENCY}'" in _logs(stack, flow_run_id)
    with psycopg.connect(stack_database) as conn:
        files = dict(conn.execute("select path, status from ingested_files").fetchall())
        (chunks,) = conn.execute("select count(*) from documents").fetchone()
    assert files["prds/referral-program.md"] == "ingested"
    assert files["designs/Aurora_team/icon-set.json"] == "ingested"
    assert chunks > 0

    shown = subprocess.run(
        [*PREFECT, "deployment", "inspect", "tidal/ingest"],
        env=stack,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "'cron': '0 3 * * *'" in shown and "'timezone': 'UTC'" in shown
    assert "'active': True" in shown
    assert "'entrypoint': 'flows/ingest.py:tidal'" in shown
    assert "'work_pool_name': 'tidal'" in shown
    assert "'concurrency': None" in shown


def test_the_served_deployment_runs_to_completed(
    stack: dict[str, str], stack_database: str, tmp_path: Path
) -> None:
    """``python deployments/serve.py``: the flow's parameters validate in the served process too
    (they once failed every run: "`TidalModel` is not fully defined")."""
    corpus = _corpus(tmp_path / "corpus", "prds/calendar-export.md")
    served = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "deployments" / "serve.py"), "--name", "served"],
        cwd=REPO_ROOT,
        env=stack,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = httpx.get(f"{stack['PREFECT_API_URL']}/deployments/name/tidal/served")
            if found.status_code == 200:
                break
            assert served.poll() is None, served.communicate()[0][-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("deployments/serve.py never registered tidal/served")

        code, out, flow_run_id = _deployment_run(
            stack, f"source={corpus}", "concurrency=1", name="tidal/served"
        )

        assert code == 0, out[-3000:]
        assert "Flow run finished successfully in 'Completed'" in out
        assert _flow_run(stack, flow_run_id)["state"]["type"] == "COMPLETED"
        with psycopg.connect(stack_database) as conn:
            (status,) = conn.execute(
                "select status from ingested_files where path = 'prds/calendar-export.md'"
            ).fetchone()
        assert status == "ingested"
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        served.wait(timeout=60)


def test_the_schedule_pauses_and_resumes_as_the_docs_say(stack: dict[str, str]) -> None:
    """docs/operations.md's three schedule commands, as written there."""

    def prefect(*args: str) -> str:
        return subprocess.run(
            [*PREFECT, "deployment", "schedule", *args],
            env={**stack, "COLUMNS": "1000"},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout

    def active() -> bool:
        [schedule] = httpx.get(
            f"{stack['PREFECT_API_URL']}/deployments/name/tidal/ingest", timeout=30
        ).json()["schedules"]
        return schedule["active"]

    listed = prefect("ls", "tidal/ingest")
    [schedule_id] = re.findall(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", listed
    )
    prefect("pause", "tidal/ingest", schedule_id)
    assert not active()
    prefect("resume", "tidal/ingest", schedule_id)
    assert active()


def test_a_failed_deployment_run_says_why_where_it_is_watched(
    stack: dict[str, str], tmp_path: Path
) -> None:
    corpus = _corpus(tmp_path / "corpus", "prds/calendar-export.md", broken="designs/x/bad.json")

    code, out, flow_run_id = _deployment_run(stack, f"source={corpus}", "concurrency=1")

    assert code == 1, out[-3000:]
    # a parameter that is set beats the worker's variable
    assert "'concurrency': '1'" in _logs(stack, flow_run_id)
    reason = "1 of 2 files failed: designs/x/bad.json (permanent: invalid JSON"
    state = _flow_run(stack, flow_run_id)["state"]
    assert state["type"] == "FAILED" and reason in state["message"]  # what the UI shows
    assert "`tidal failed` lists them" in state["message"]
    assert reason in out  # and what --watch printed: the run's log lines, its summary too
    assert "Tidal: 2 files from" in out


def test_a_bad_parameter_is_named_as_the_parameter(stack: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "docs"

    code, out, flow_run_id = _deployment_run(stack, f"source={missing}")

    assert code == 1, out[-3000:]
    message = _flow_run(stack, flow_run_id)["state"]["message"]
    assert f"parameter source = '{missing}'" in message, message
    assert "TIDAL_SOURCE" not in message
    assert f"parameter source = '{missing}'" in out  # --watch's last lines carry the reason
    assert "Traceback" not in out


def test_a_deployment_run_killed_with_sigkill_ends_crashed(
    stack: dict[str, str], openai_api: FakeOpenAI
) -> None:
    """kill -9 of the flow's process: the run leaves Running (the worker reports it Crashed)."""
    openai_api.delay_next(0.5, times=100)  # one file at a time, each a while: still running
    asked = len(openai_api.requests)
    _, out, flow_run_id = _deployment_run(
        stack, f"source={SAMPLE_CORPUS}", "concurrency=1", watch=False
    )
    # Inside the run: the key checked and a file's embedding request in flight.
    pids = _flow_processes(
        flow_run_id,
        until=lambda: (
            len(openai_api.requests) >= asked + 2 and _state(stack, flow_run_id) == "RUNNING"
        ),
    )
    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + 120
    while _state(stack, flow_run_id) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    run = _flow_run(stack, flow_run_id)
    assert run["state"]["type"] == "CRASHED", run["state"]


def _state(env: dict[str, str], flow_run_id: str) -> str:
    return _flow_run(env, flow_run_id)["state"]["type"]


def _flow_processes(flow_run_id: str, *, until, timeout: float = 300) -> list[int]:  # type: ignore[no-untyped-def]
    """The processes running this flow run (their environment names it), once ``until()``."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker in environ.read_bytes().split(b"\0"):
                    pids.append(int(environ.parent.name))
            except OSError:
                continue
        if pids and until():
            return pids
        time.sleep(0.1)
    pytest.fail(f"no process of flow run {flow_run_id} was seen running")
