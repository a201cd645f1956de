"""The local model on a thread pool against the same run spread over Dask processes.

    python bench/runners.py [--files 40] [--rounds 2]

The local model is CPU-bound and serialised inside one process (one model, one lock), so on a
2-core machine a second process should help where a second thread cannot. Both ways run the
real flow (`python flows/ingest.py`) against one real Prefect server started here (a Dask run
needs one), on a fresh database each, in alternating order: ``TIDAL_TASK_RUNNER=threads`` with
concurrency 2, and ``TIDAL_TASK_RUNNER=dask`` with a local cluster of 2 processes. Wall time
is the whole subprocess, start-up and model loads included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port), "--analytics-off"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    sys.exit("the Prefect server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from bench.common import Databases, span
    from bench.corpus import generate
    from tests.services import free_port

    work = Path(tempfile.mkdtemp(prefix="tidal-dask-"))
    corpus = work / "corpus"
    generate(corpus, args.files, seed=11)
    databases = Databases(work / "pg")
    port = free_port()
    server = _server(work / "prefect", port)
    walls: defaultdict[str, list[float]] = defaultdict(list)
    try:
        for round_ in range(args.rounds):
            ways = ("threads", "dask") if round_ % 2 == 0 else ("dask", "threads")
            for way in ways:
                env = {
                    k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))
                }
                env.update(
                    PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
                    PREFECT_HOME=str(work / "prefect"),
                    PREFECT_LOGGING_LEVEL="WARNING",
                    TIDAL_SOURCE=str(corpus),
                    TIDAL_DATABASE_URL=databases.fresh(),
                    TIDAL_DATA_DIR=str(work / "data"),
                    TIDAL_CONCURRENCY="2",
                    TIDAL_TASK_RUNNER=way,
                    TIDAL_DASK_WORKERS="2",
                )
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, str(ROOT / "flows" / "ingest.py")],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                walls[way].append(time.perf_counter() - started)
                if done.returncode != 0:
                    sys.exit(f"{way} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
                totals = done.stdout.strip().splitlines()[-2:]
                print(f"  {way:8} {walls[way][-1]:6.1f} s  {' '.join(totals)}", file=sys.stderr)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        shutil.rmtree(work, ignore_errors=True)
    ratios = [d / t for d, t in zip(walls["dask"], walls["threads"], strict=True)]
    print(f"\nlocal model, {args.files} generated files, {args.rounds} round(s), min–max\n")
    print("| task runner | wall (s) | vs threads |")
    print("|---|---|---|")
    print(f"| threads, concurrency 2 | {span(walls['threads'], '{:.1f}')} | 1.00 |")
    print(
        f"| dask, 2 local processes | {span(walls['dask'], '{:.1f}')} | {span(ratios, '{:.2f}')} |"
    )


if __name__ == "__main__":
    main()
