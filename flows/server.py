"""The local Prefect server ad hoc runs report to, kept running from one run to the next.

With no ``PREFECT_API_URL``, Prefect starts a temporary server for each flow run and stops it
as the run's process exits: seconds to start and stop on every ``python flows/ingest.py`` with
work to do, its CPU competing with the run's, and the run's "View at" link dead by the time
anyone opens it. Tidal instead starts one server on the first run that needs it and leaves it
running, so later runs report to it at once and its UI keeps every run's history.
``tidal server stop`` stops it; ``TIDAL_PREFECT_SERVER=temporary`` keeps Prefect's own
temporary server.

The server is ``prefect server start`` in a session of its own, recorded in
``<data dir>/prefect-server.json`` (pid, port, Prefect version) with its log beside it. A record
is trusted only while its process lives and answers at its port with this Prefect's version, so
a stale record (a reboot, a killed server, an upgraded Prefect) means a fresh start. Nothing here
imports Prefect: ``tidal server status`` answers in milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from tidal.errors import ServiceDown

STATE = "prefect-server.json"
LOG = "prefect-server.log"
DATABASE = "prefect-server.db"
PREFERRED_PORT = 4200
"""Prefect's own default port, used when free: the UI's address stays the one users know."""
STARTUP_SECONDS = 90.0
"""How long a start may take: creating a new Prefect database on a loaded machine is slow."""
NICENESS = 10
"""The server runs below the runs it records: on a busy machine (a local model encoding on every
core) the work goes first and the bookkeeping catches up after, instead of both slowing down."""
_SECRETS = ("TIDAL_", "OPENAI_", "SUPABASE_")
"""Variables the long-lived server never needs, so it never holds them."""


@dataclass(frozen=True)
class LocalServer:
    pid: int
    port: int
    prefect: str
    """The Prefect version that started it: a run under another version starts a new one."""

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"


def running(data_dir: Path) -> LocalServer | None:
    """The server recorded under ``data_dir``, if it is alive, answers, and runs this Prefect."""
    server = _recorded(data_dir)
    if server is None or not _is_ours(server) or server.prefect != version("prefect"):
        return None
    return server if _answers(server.api_url) else None


def ensure(data_dir: Path) -> LocalServer:
    """The running server, or a new one; two runs starting at once start one server."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(data_dir / f"{STATE}.lock"):
        server = running(data_dir)
        if server is not None:
            return server
        stop(data_dir)  # a recorded server that is stale, or of another Prefect version
        # One start at a time for this user: a server still starting does not listen yet,
        # so another data folder's start would take the same free port, and the one that
        # loses the bind would find the winner answering there and take it for its own.
        with _exclusive(Path(tempfile.gettempdir()) / f"tidal-prefect-start-{os.getuid()}.lock"):
            return _start(data_dir)


def stop(data_dir: Path, *, timeout: float = 15.0) -> LocalServer | None:
    """Stop the recorded server (its whole process group) and forget it; the one stopped."""
    server = _recorded(data_dir)
    if server is None:
        return None
    if _is_ours(server):  # a stale record's pid may belong to another process by now
        _signal_group(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(server.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(server.pid):
            _signal_group(server.pid, signal.SIGKILL)
    (data_dir / STATE).unlink(missing_ok=True)
    return server


def _start(data_dir: Path) -> LocalServer:
    last_error = ""
    for port in (_free_port(PREFERRED_PORT), _free_port(0)):  # the second if the first is taken
        process = _launch(data_dir, port)
        server = LocalServer(process.pid, port, version("prefect"))
        deadline = time.monotonic() + STARTUP_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(server.api_url):
                (data_dir / STATE).write_text(json.dumps(asdict(server)))
                return server
            time.sleep(0.1)
        if process.poll() is None:  # still starting after the deadline: give up on it
            _signal_group(process.pid, signal.SIGKILL)
        last_error = f"it exited with status {process.poll()}"
    raise ServiceDown(
        f"the local Prefect server did not start ({last_error}); see {data_dir / LOG}. Set "
        "PREFECT_API_URL to a running server, or TIDAL_PREFECT_SERVER=temporary"
    )


RETENTION = {
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": "2592000",  # 30 days
    "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": "P7D",
}
"""As scripts/stack.sh gives its server: without the flow_runs vacuum Prefect keeps every task
run, state and log for ever (docs/operations.md#the-prefect-servers-own-database)."""


RECORDING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TRIGGERS_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}
"""As scripts/stack.sh gives its server: its services read and write events in batches.
Prefect's task run recorder reads and writes one event at a time by default, so under a run of
thousands of files it falls behind and the UI lags the run (and the in-memory broker drops
events once 10,000 wait). A batch not yet full is written within a second, so a small run's
last task runs show at once. Whole seconds: the recorder sleeps ``int()`` of its interval, so
0.5 would make it spin on a core even when idle (docs/scaling.md#the-prefect-server-at-scale)."""


def _launch(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    environment = {**RETENTION, **RECORDING}  # unless the user's environment says otherwise
    environment |= {k: v for k, v in os.environ.items() if not k.startswith(_SECRETS)}
    environment.pop("PREFECT_API_URL", None)
    environment.update(
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # The UI asks its API at the address these settings give, 4200 by default whatever
        # --port says: on another port its every link would open another server's runs.
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_UI_API_URL=f"http://127.0.0.1:{port}/api",
        # A database of its own, under Tidal's data folder: never the one in PREFECT_HOME
        # that a server the user started (scripts/stack.sh, `prefect server start`) uses.
        PREFECT_SERVER_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///"
        + str(data_dir.resolve() / DATABASE),
    )
    nice = shutil.which("nice")
    lowered = [nice, "-n", str(NICENESS)] if nice else []
    with (data_dir / LOG).open("ab") as log:
        return subprocess.Popen(
            [*lowered, sys.executable, "-m", "prefect", "server", "start"]
            + ["--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=data_dir,
            start_new_session=True,  # outlives this run; its group is what ``stop`` signals
        )


def _recorded(data_dir: Path) -> LocalServer | None:
    try:
        return LocalServer(**json.loads((data_dir / STATE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _answers(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _is_ours(server: LocalServer) -> bool:
    """Whether the recorded pid is alive and is still that server: after a reboot or in a new
    container the same pid can be any process, which must never be signalled."""
    if not _alive(server.pid):
        return False
    try:
        command = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # no /proc (macOS): ask ps
        shown = subprocess.run(
            ["ps", "-o", "command=", "-p", str(server.pid)], capture_output=True, check=False
        )
        command = shown.stdout.split()
    words = {w.decode(errors="replace") for w in command}
    return {"prefect", "server", "start", str(server.port)} <= words


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):  # reap it if this process started it
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there, else one the system picks."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
