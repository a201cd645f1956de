"""Side-by-side measurements of the ingest flow, printed as one table.

    python bench/ingest.py            # ~2-3 minutes on 2 cores

Every configuration runs in its own subprocess (so its peak RSS is its own) over the same
generated corpus, against a fresh database on one embedded Postgres, with the fake OpenAI server
from tests/fakes answering each embeddings request after a fixed delay that stands for the
network. Ratios are taken against the first row, measured in the same run: absolute seconds on
a noisy 2-core machine mean little, ratios between neighbours do.

Rows:
  concurrency 1 / 2 / 4      the same 60 files, cold (every chunk embedded)
  re-run, nothing changed    concurrency 2, every file skipped
  one section edited         concurrency 2, one PRD section changed: only its chunks re-embedded
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LATENCY = 0.15  # seconds the fake OpenAI takes per request


def make_corpus(root: Path, extra: int = 16) -> None:
    shutil.copytree(ROOT / "examples" / "corpus", root)
    for i in range(extra):
        (root / "prds" / f"generated-{i:02d}.md").write_text(
            f"# Generated PRD {i}\n\n## Problem\n\nTravellers in group {i} lose track of plans.\n\n"
            f"## Goals\n\n- Keep group {i} in sync.\n- Show changes within a minute.\n"
        )


def one(corpus: str, concurrency: int) -> dict[str, float]:
    """Run the flow once in this process; report seconds, embedded inputs and peak RSS."""
    from bench.common import peak_rss_mb
    from flows.ingest import tidal

    started = time.perf_counter()
    summary = tidal(source=corpus, concurrency=concurrency)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "files": len(summary.results),
        "ingested": summary.counts["ingested"],
        "chunks": summary.chunks,
        "reused": summary.reused,
        "rss_mb": peak_rss_mb(),
    }


def main() -> None:
    from tests.fakes.openai_server import FakeOpenAI
    from tidal.store.embedded import embedded_database_url

    work = Path(tempfile.mkdtemp(prefix="tidal-bench-"))
    from bench.common import stop_local_servers, stop_local_servers_at_exit

    stop_local_servers_at_exit(work)
    corpus = work / "corpus"
    make_corpus(corpus)
    base = embedded_database_url(work / "data")
    import psycopg

    def fresh_db() -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))

    rows: list[tuple[str, dict[str, float]]] = []
    with FakeOpenAI(api_key="sk-bench") as api:
        api.delay_next(LATENCY, times=10**6)

        def run(label: str, db: str, concurrency: int) -> None:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
            env.update(
                TIDAL_DATABASE_URL=db,
                TIDAL_EMBEDDER="openai",
                OPENAI_API_KEY="sk-bench",
                OPENAI_BASE_URL=api.base_url,
                TIDAL_DATA_DIR=str(work / "data"),
                PREFECT_HOME=str(work / "prefect"),
                PREFECT_LOGGING_LEVEL="WARNING",
            )
            done = subprocess.run(
                [sys.executable, __file__, "--one", str(corpus), str(concurrency)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append((label, json.loads(done.stdout.strip().splitlines()[-1])))

        for c in (1, 2, 4):
            run(f"cold, concurrency {c}", fresh_db(), c)
        warm = fresh_db()
        run("cold, concurrency 2 (setup)", warm, 2)
        run("re-run, nothing changed", warm, 2)
        prd = corpus / "prds" / "offline-sync.md"
        text = prd.read_text()
        cut = text.index("\n## ", 2000)
        prd.write_text(text[:cut] + "\n\nOne more sentence in this section.\n" + text[cut:])
        run("one section edited", warm, 2)

    first = rows[0][1]["seconds"]
    print(f"\nfake OpenAI latency {LATENCY}s/request; {rows[0][1]['files']:.0f} files\n")
    header = ("run", "seconds", "speed-up", "ingested", "chunks", "reused", "peak RSS MB")
    print("{:32} {:>8} {:>9} {:>9} {:>7} {:>7} {:>12}".format(*header))
    for label, r in rows:
        print(
            f"{label:32} {r['seconds']:8.1f} {first / r['seconds']:8.2f}x {r['ingested']:9.0f}"
            f" {r['chunks']:7.0f} {r['reused']:7.0f} {r['rss_mb']:12.0f}"
        )
    stop_local_servers(work)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
