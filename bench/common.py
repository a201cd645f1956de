"""What the benchmarks share: fresh databases, a Prefect server, peak RSS and CPU, ranges."""

from __future__ import annotations

import atexit
import os
import resource
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import psutil


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak RSS (this one's by default). Not ``ru_maxrss``: on Linux a child
    started by fork and exec reports its parent's peak at the fork when that is higher."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    if pid != "self":
        return 0.0  # a zombie or kernel thread has no memory of its own left to report
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tree_cpu(pid: int) -> float:
    """User and system CPU seconds of a process and its live descendants."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def start_prefect_server(
    port: int, env: dict[str, str], *, log: IO[bytes] | None = None, wait: float = 120.0
) -> subprocess.Popen[bytes]:
    """``prefect server start`` on 127.0.0.1:``port`` in a session of its own, with exactly
    ``env``, once its API answers; the benchmark exits if it does not within ``wait`` s."""
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port), "--analytics-off"],
        env=env,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    sys.exit(f"the Prefect server did not start{f': see {log.name}' if log else ''}")


def fresh_database(base: str, prefix: str = "bench") -> str:
    """A new empty database on the Postgres at ``base``; its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


class Databases:
    """An embedded Postgres under ``folder``; ``fresh()`` makes an empty database on it."""

    def __init__(self, folder: Path) -> None:
        from tidal.store.embedded import embedded_database_url

        self.base = embedded_database_url(folder)

    def fresh(self, prefix: str = "bench") -> str:
        return fresh_database(self.base, prefix)


def openai_run_env(
    corpus: Path, database: str, base_url: str, key: str, work: Path, **extra: str
) -> dict[str, str]:
    """The environment of a Tidal run from ``corpus`` into ``database`` embedding at a fake
    OpenAI server with no budget to speak of: this process's environment without its own
    ``TIDAL_*`` and ``PREFECT_*``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(
        TIDAL_SOURCE=str(corpus),
        TIDAL_DATABASE_URL=database,
        TIDAL_EMBEDDER="openai",
        OPENAI_API_KEY=key,
        OPENAI_BASE_URL=base_url,
        TIDAL_OPENAI_RPM="1000000",
        TIDAL_OPENAI_TPM="1000000000",
        TIDAL_DATA_DIR=str(work / "data"),
    )
    env.update(extra)
    return env


def span(values: list[float], fmt: str = "{:.0f}") -> str:
    """``low–high`` over rounds, one value when they agree at this precision, ``–`` for none
    (a way the benchmark was told not to run)."""
    if not values:
        return "–"
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}–{high}"


def stop_local_servers(work: Path) -> None:
    """Stop every local Prefect server the benchmark's ad hoc runs left running under ``work``
    (flows/server.py keeps one per data folder for the next run)."""
    from flows import server

    for record in work.rglob(server.STATE):
        server.stop(record.parent)


def stop_local_servers_at_exit(work: Path) -> None:
    """``stop_local_servers(work)`` when the benchmark exits, however it exits (call it before
    deleting ``work`` too: the records live there)."""
    atexit.register(stop_local_servers, work)
