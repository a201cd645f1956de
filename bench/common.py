"""What the benchmarks share: fresh databases on one embedded Postgres, peak RSS, ranges."""

from __future__ import annotations

import atexit
import os
import resource
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: on Linux a child started by fork and exec
    reports its parent's peak at the fork when that is higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Databases:
    """An embedded Postgres under ``folder``; ``fresh()`` makes an empty database on it."""

    def __init__(self, folder: Path) -> None:
        from tidal.store.embedded import embedded_database_url

        self.base = embedded_database_url(folder)

    def fresh(self, prefix: str = "bench") -> str:
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        return urlunsplit(urlsplit(self.base)._replace(path=f"/{name}"))


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
    """``low–high`` over rounds, or one value when they agree at this precision."""
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
