"""The local model inside a whole Tidal run against the model alone on the same chunks.

    python bench/local.py                   # 60 generated files, 2 rounds, ~4 min
    python bench/local.py --files 40 --rounds 3

Each round, in alternating order, each in its own subprocess:

* ``tidal``: ``python flows/ingest.py`` as a user's first run goes (a fresh data folder: it
  creates the embedded database and starts Tidal's local Prefect server, stopped after the
  measurement), the local model, wall time from process start to exit;
* ``daily``: the same run as a daily one by hand finds things: the embedded Postgres already
  running (a fresh database on it, ``TIDAL_DATABASE_URL``) and the local Prefect server an earlier
  run of the same data folder started (``flows/server.py``);
* ``server``: the same, reporting to a Prefect server of the benchmark's own
  (``PREFECT_API_URL``), as the README's stack and any deployment have;
* ``raw``: load the same SentenceTransformer and ``encode`` exactly the chunks that run stored
  (read back from its database), in batches of 64 as the pipeline sends them: the floor any
  tool using this model pays.

Reported: wall seconds and peak RSS (VmHWM of that process; the Prefect server is a separate
process) of each, and their ratio. Target (issue 10): tidal <= 1.3x raw, peak RSS <= 800 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def raw(data_dir: str) -> dict[str, float]:
    """Model load plus encode of the stored chunks, in this process."""
    started = time.perf_counter()
    import psycopg

    from bench.common import peak_rss_mb
    from tidal.embedders.local import LocalEmbedder
    from tidal.store.embedded import embedded_database_url

    with psycopg.connect(embedded_database_url(Path(data_dir))) as conn:
        texts = [
            row[0]
            for row in conn.execute(
                "select content from documents order by source_path, chunk_index"
            )
        ]
    embedder = LocalEmbedder()
    for start in range(0, len(texts), 64):
        embedder.embed(texts[start : start + 64])
    return {
        "seconds": time.perf_counter() - started,
        "rss_mb": peak_rss_mb(),
        "chunks": len(texts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from bench.common import Databases, span
    from bench.corpus import generate
    from bench.runners import _server
    from tests.services import free_port

    work = Path(tempfile.mkdtemp(prefix="tidal-local-"))
    from bench.common import stop_local_servers, stop_local_servers_at_exit

    stop_local_servers_at_exit(work)
    generate(work / "corpus", args.files, seed=3)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    base.update(TIDAL_SOURCE=str(work / "corpus"), PREFECT_HOME=str(work / "prefect"))
    _tidal(base, work / "warm")  # untimed: the chunks raw encodes, and warm caches
    stop_local_servers(work / "warm")
    databases = Databases(work / "pg")
    port = free_port()
    server = _server(work / "prefect-server", port)
    daily = work / "data-daily"  # its local Prefect server is started here, unmeasured
    _tidal({**base, "TIDAL_DATABASE_URL": databases.fresh("warm")}, daily)
    modes = ("tidal", "raw", "daily", "server")
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    try:
        for round_ in range(args.rounds):
            for mode in modes[round_ % len(modes) :] + modes[: round_ % len(modes)]:
                if mode == "tidal":  # a first run: a fresh data folder, the local server started
                    data = work / f"data-{round_}"
                    results[mode].append(_tidal(base, data))
                    stop_local_servers(data)  # not left idling through the later rounds
                elif mode == "daily":
                    env = {**base, "TIDAL_DATABASE_URL": databases.fresh("local")}
                    results[mode].append(_tidal(env, daily))
                elif mode == "server":  # as a daily run: Postgres and a Prefect server running
                    env = {
                        **base,
                        "TIDAL_DATABASE_URL": databases.fresh("local"),
                        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
                    }
                    results[mode].append(_tidal(env, work / "data-server"))
                else:
                    done = subprocess.run(
                        [sys.executable, __file__, "--raw", str(work / "warm")],
                        env=base,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    results[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
                r = results[mode][-1]
                print(f"  round {round_ + 1} {mode:6} {r['seconds']:6.1f} s  {r['rss_mb']:5.0f} MB")
    finally:
        server.terminate()
        server.wait(30)

    print(f"\n{args.files} files, {results['raw'][0]['chunks']:.0f} chunks")
    print(f"{'':7} {'wall s':>12} {'peak RSS MB':>12} {'/ raw':>10}")
    for mode in modes:
        rows = results[mode]
        ratio = [r["seconds"] / raw["seconds"] for r, raw in zip(rows, results["raw"], strict=True)]
        print(
            f"{mode:7} {span([r['seconds'] for r in rows], '{:.1f}'):>12} "
            f"{span([r['rss_mb'] for r in rows]):>12} {span(ratio, '{:.2f}'):>10}"
        )


def _tidal(env: dict[str, str], data: Path) -> dict[str, float]:
    """``python flows/ingest.py`` with its data under ``data``; wall and peak RSS."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss %M", sys.executable, str(ROOT / "flows" / "ingest.py")],
        env={**env, "TIDAL_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"tidal failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    maxrss = int(done.stderr.strip().splitlines()[-1].split()[-1])
    return {"seconds": seconds, "rss_mb": maxrss / 1024}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--raw"]:
        print(json.dumps(raw(sys.argv[2])))
    else:
        main()
