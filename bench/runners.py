"""Threads against a 2-process local Dask cluster: wall time and CPU per file, server included.

    python bench/runners.py [--files 300] [--rounds 2] [--embedder hash|local] [--ways ...]

Both ways run the real flow (`python flows/ingest.py`) against one real Prefect server started
here (a Dask run needs one), each on a fresh database, in alternating order:
``TIDAL_TASK_RUNNER=threads`` and ``TIDAL_TASK_RUNNER=dask`` with a local cluster of 2 worker
processes, at the same ``TIDAL_CONCURRENCY`` (the embedder's default unless given). Wall time
is the whole subprocess, start-up and model loads included.

CPU is the run's processes - the flow and, on Dask, its nannies and workers - read from the
kernel as the flow's reaped children, and the Prefect server's, from the flow's start until
the server has gone quiet after the flow ended (it records what the run sent it after the run
is over; that wait is reported as "server drains").

``--embedder hash`` puts a hash of the text in place of the model in every process
(`bench/hash_embedder/sitecustomize.py`), so what is left is Tidal's pipeline and orchestration;
``local`` is the real local model.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUIET_CPU_SECONDS = 0.1
"""The server is quiet once it used less CPU than this over ``QUIET_WINDOW`` seconds."""
QUIET_WINDOW = 3.0


def _server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1")
    from bench.common import start_prefect_server

    return start_prefect_server(port, env)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _drain(server: int) -> float:
    """Wait until the server is quiet; the seconds it took."""
    from bench.common import tree_cpu

    started = time.perf_counter()
    last = tree_cpu(server)
    while time.perf_counter() - started < 300:
        time.sleep(QUIET_WINDOW)
        now = tree_cpu(server)
        if now - last < QUIET_CPU_SECONDS:
            return time.perf_counter() - started - QUIET_WINDOW
        last = now
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--embedder", choices=("hash", "local"), default="hash")
    parser.add_argument("--concurrency", type=int, help="files in flight (embedder's default)")
    parser.add_argument("--ways", default="threads,dask", help="comma-separated task runners")
    args = parser.parse_args()
    ways = args.ways.split(",")

    from bench.common import Databases, span, tree_cpu
    from bench.corpus import generate
    from tests.services import free_port

    work = Path(tempfile.mkdtemp(prefix="tidal-dask-"))
    corpus = work / "corpus"
    generate(corpus, args.files, seed=11)
    databases = Databases(work / "pg")
    port = free_port()
    server = _server(work / "prefect", port)
    _drain(server.pid)
    runs: defaultdict[str, list[dict[str, float]]] = defaultdict(list)
    try:
        for round_ in range(args.rounds):
            for way in ways if round_ % 2 == 0 else ways[::-1]:
                env = {
                    k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))
                }
                paths = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(":") if p]
                if args.embedder == "hash":
                    paths.insert(0, str(ROOT / "bench" / "hash_embedder"))
                env.update(
                    PYTHONPATH=":".join(paths),
                    PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
                    PREFECT_HOME=str(work / "prefect"),
                    PREFECT_LOGGING_LEVEL="WARNING",
                    TIDAL_SOURCE=str(corpus),
                    TIDAL_DATABASE_URL=databases.fresh(),
                    TIDAL_DATA_DIR=str(work / "data"),
                    TIDAL_TASK_RUNNER=way,
                    TIDAL_DASK_WORKERS="2",
                )
                if args.concurrency:
                    env["TIDAL_CONCURRENCY"] = str(args.concurrency)
                server_before = tree_cpu(server.pid)
                children_before = _children_cpu()
                started = time.perf_counter()
                flow = subprocess.Popen(
                    [sys.executable, str(ROOT / "flows" / "ingest.py")],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                out, err = flow.communicate()
                wall = time.perf_counter() - started
                if flow.returncode != 0:
                    sys.exit(f"{way} failed:\n{out[-3000:]}\n{err[-3000:]}")
                run_cpu = _children_cpu() - children_before
                drains = _drain(server.pid)
                server_cpu = tree_cpu(server.pid) - server_before
                runs[way].append(
                    {"wall": wall, "cpu": run_cpu, "server": server_cpu, "drains": drains}
                )
                print(
                    f"  {way:8} wall {wall:6.1f} s  cpu {run_cpu:6.1f} s  server {server_cpu:5.1f}"
                    f" s (drains {drains:4.1f} s)  {' '.join(out.strip().splitlines()[-2:])}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        shutil.rmtree(work, ignore_errors=True)

    def per_file(way: str, *keys: str) -> list[float]:
        return [1000 * sum(r[k] for k in keys) / args.files for r in runs[way]]

    base = runs[ways[0]]
    print(
        f"\n{args.embedder} embedder, {args.files} generated files, {args.rounds} round(s), "
        f"concurrency {args.concurrency or 'default'}, min–max\n"
    )
    print(
        "| task runner | wall (s) | run CPU ms/file | server CPU ms/file | total ms/file "
        "| total vs threads | server drains (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for way in ways:
        ratios = [
            (r["cpu"] + r["server"]) / (b["cpu"] + b["server"])
            for r, b in zip(runs[way], base, strict=True)
        ]
        print(
            f"| {way} | {span([r['wall'] for r in runs[way]], '{:.1f}')} "
            f"| {span(per_file(way, 'cpu'))} | {span(per_file(way, 'server'))} "
            f"| {span(per_file(way, 'cpu', 'server'))} | {span(ratios, '{:.2f}')} "
            f"| {span([r['drains'] for r in runs[way]], '{:.0f}')} |"
        )


if __name__ == "__main__":
    main()
