"""What one run adds to the Prefect server's own database, and what its retention takes back.

    python bench/prefect_growth.py                  # 500 files (~5 min)
    python bench/prefect_growth.py --files 1000

A standalone `prefect server start` on SQLite (as scripts/stack.sh runs it) with the vacuum
settings stack.sh and the compose file use, but checking every 10 s instead of hourly; a
generated corpus (bench/corpus.py), the fake OpenAI server, one embedded Postgres. Three runs
of `python flows/ingest.py` against the server: a full run, an unchanged re-run, and one after
1 % of the files changed. After each, once the server has stopped recording (rows unchanged
for 15 s), the rows and bytes of its tables (SQLite's dbstat) are read. Then every run is
aged past the retention periods (end times and event times moved back a year, in SQL) and the
vacuum's next passes are waited for: what is left is what retention never removes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "sk-bench"
TABLES = (
    "flow_run",
    "flow_run_state",
    "task_run",
    "task_run_state",
    "log",
    "artifact",
    "artifact_collection",
    "events",
    "event_resources",
)
RETENTION = {
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(30 * 86400),
    "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": "P7D",
}
"""As scripts/stack.sh and deployments/docker-compose.yml set them."""


def snapshot(db: Path) -> dict[str, tuple[int, int]]:
    """Table -> (rows, bytes of the table and its indexes)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60) as conn:
        sizes: dict[str, int] = {}
        for name, table, size in conn.execute(
            "select d.name, coalesce(m.tbl_name, d.name), sum(d.pgsize) from dbstat d"
            " left join sqlite_schema m on m.name = d.name group by d.name"
        ):
            sizes[table] = sizes.get(table, 0) + size
            del name
        return {
            t: (conn.execute(f"select count(*) from {t}").fetchone()[0], sizes.get(t, 0))
            for t in TABLES
        }


def settled(db: Path, quiet: float = 15.0, patience: float = 600.0) -> dict[str, tuple[int, int]]:
    """The snapshot once no table's row count has changed for ``quiet`` seconds."""
    last, since, started = snapshot(db), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - started < patience:
        time.sleep(2)
        now = snapshot(db)
        if {t: r for t, (r, _) in now.items()} != {t: r for t, (r, _) in last.items()}:
            since = time.monotonic()
        last = now
    return last


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(work: Path, db: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        RETENTION,
        PREFECT_HOME=str(work / "server-home"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{db}",
        PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS="10",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    from bench.common import start_prefect_server

    log = (work / "server.log").open("wb")
    return start_prefect_server(port, env, log=log, wait=180), api


def age_everything(db: Path) -> None:
    """Move every run's end and every event a year back, as if the runs were that old."""
    with sqlite3.connect(db, timeout=60) as conn:
        conn.execute("update flow_run set end_time = datetime(end_time, '-365 days')")
        conn.execute("update events set occurred = datetime(occurred, '-365 days')")
        conn.execute("update event_resources set occurred = datetime(occurred, '-365 days')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    from bench.common import Databases, openai_run_env
    from bench.corpus import generate
    from tests.fakes.openai_server import FakeOpenAI

    work = Path(tempfile.mkdtemp(prefix="tidal-prefect-growth-"))
    db = work / "prefect.db"
    corpus = work / "corpus"
    paths = generate(corpus, args.files)
    server, api_url = start_server(work, db)
    try:
        tidal_db = Databases(work / "pg").fresh()
        rows = [("empty", settled(db, quiet=5))]
        with FakeOpenAI(api_key=KEY) as api:
            env = openai_run_env(
                corpus,
                tidal_db,
                api.base_url,
                KEY,
                work,
                TIDAL_CONCURRENCY=str(args.concurrency),
                PREFECT_API_URL=api_url,
                PREFECT_HOME=str(work / "flow-home"),
                DO_NOT_TRACK="1",
            )
            edited = paths[:: max(1, len(paths) // max(1, args.files // 100))][: args.files // 100]
            for name in ("full", "unchanged", "1% edited"):
                if name == "1% edited":
                    for rel in edited:
                        with (corpus / rel).open("a") as f:
                            f.write("\n\nEdited.\n" if not rel.endswith(".json") else "")
                        if rel.endswith(".json"):
                            text = (corpus / rel).read_text()
                            (corpus / rel).write_text(text.replace("{", '{"edited": true, ', 1))
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, str(ROOT / "flows" / "ingest.py")],
                    env=env, cwd=work, capture_output=True, text=True,
                )  # fmt: skip
                if done.returncode not in (0, 1):
                    sys.exit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
                print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
                rows.append((name, settled(db)))
        age_everything(db)
        time.sleep(25)  # two passes of the vacuum, every 10 s here
        rows.append(("a year later", settled(db)))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    _table(rows, args.files)
    shutil.rmtree(work, ignore_errors=True)


def _table(rows: list[tuple[str, dict[str, tuple[int, int]]]], files: int) -> None:
    print(f"\n{files} files; rows and KB added by each step (SQLite, dbstat)\n")
    print("| table | " + " | ".join(name for name, _ in rows[1:]) + " |")
    print("|---|" + "---|" * (len(rows) - 1))
    for table in TABLES:
        cells = []
        for (_, before), (_, after) in zip(rows, rows[1:], strict=False):
            dr = after[table][0] - before[table][0]
            dk = (after[table][1] - before[table][1]) / 1024
            cells.append(f"{dr:+,} rows, {dk:+,.0f} KB")
        print(f"| {table} | " + " | ".join(cells) + " |")
    totals = []
    for (_, before), (_, after) in zip(rows, rows[1:], strict=False):
        grown = sum(after[t][1] - before[t][1] for t in TABLES)
        totals.append(f"{grown / 1024:+,.0f} KB")
    print("| all of these | " + " | ".join(totals) + " |")
    final = rows[-1][1]
    print("\nleft after retention: " + ", ".join(f"{t} {r:,}" for t, (r, _) in final.items()))


if __name__ == "__main__":
    main()
