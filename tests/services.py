"""Services a test owns and may stop, each on a port of its own, never the shared ones; and
which databases of the shared Redis a test process may use.

A Postgres 16 with pgvector, built from pgserver's binaries (they carry pgvector) but started on
a TCP port, so a test can stop it mid-run and start it again as an outage would; and a Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pgserver
from pgserver.utils import ensure_prefix_permissions

BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"


def shared_redis_url(slot: int) -> str:
    """A database of the shared Redis on 127.0.0.1:6379 for this test process's ``slot``.

    Under pytest-xdist each worker gets databases of its own (a ``flushdb`` in one worker must
    not empty another's), counted down from 15 so that database 0 stays the user's.
    """
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    database = 15 - slot - 2 * worker
    if database < 1:
        raise RuntimeError(
            f"pytest-xdist worker {worker} has no Redis database of its own left; "
            "run the suite on at most 7 workers (-n 7)"
        )
    return f"redis://127.0.0.1:6379/{database}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnPostgres:
    """``initdb`` into ``folder``; ``start()``/``stop()`` as often as a test likes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "pgdata"
        self.port = free_port()
        # Postgres refuses to run as root; pgserver's own user is there for that.
        self.user = "pgserver" if os.geteuid() == 0 else None
        folder.mkdir(parents=True, exist_ok=True)
        if self.user:
            ensure_prefix_permissions(folder)  # the user must traverse down to the folder
            shutil.chown(folder, self.user, self.user)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "utf8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.folder}"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, exe: str, *args: str) -> None:
        user = {"user": self.user} if self.user else {}
        subprocess.run(
            [str(BIN / exe), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.folder,
            timeout=60,
            **user,  # type: ignore[arg-type]
        )

    def __enter__(self) -> OwnPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()


class OwnRedis:
    """``redis-server`` on a free port, keeping nothing on disk; ``stop()`` kills it."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self._folder = folder
        self.start()

    def start(self) -> None:
        """Start it (again, after ``stop``) on the same port."""
        self._server = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
             str(self._folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self._server.terminate()
        self._server.wait(10)


__all__ = ["OwnPostgres", "OwnRedis", "free_port", "shared_redis_url"]
