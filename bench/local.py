"""The local model inside a whole Tidal run against the model alone on the same chunks.

    python bench/local.py                   # 60 generated files, 2 rounds, ~4 min
    python bench/local.py --files 40 --rounds 3

Each round, in alternating order, each in its own subprocess:

* ``tidal``: ``python flows/ingest.py`` as a user runs it (temporary Prefect server, a fresh
  embedded database, the local model), wall time from process start to exit;
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
import shutil
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

    from bench.common import span
    from bench.corpus import generate

    work = Path(tempfile.mkdtemp(prefix="tidal-local-"))
    generate(work / "corpus", args.files, seed=3)
    results: dict[str, list[dict[str, float]]] = {"tidal": [], "raw": []}
    for round_ in range(args.rounds):
        data = work / f"data-{round_}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
        env.update(
            TIDAL_SOURCE=str(work / "corpus"),
            TIDAL_DATA_DIR=str(data),
            PREFECT_HOME=str(work / "prefect"),
        )
        order = ("tidal", "raw") if round_ % 2 == 0 else ("raw", "tidal")
        if order[0] == "raw":  # raw reads the chunks a tidal run stored: make them first
            _tidal(env, work / "warm")
        for mode in order:
            if mode == "tidal":
                shutil.rmtree(data, ignore_errors=True)
                results["tidal"].append(_tidal(env, data))
            else:
                source = data if data.exists() else work / "warm"
                done = subprocess.run(
                    [sys.executable, __file__, "--raw", str(source)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results["raw"].append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = results[mode][-1]
            print(f"  round {round_ + 1} {mode:5} {r['seconds']:6.1f} s  {r['rss_mb']:5.0f} MB")

    ratios = [
        t["seconds"] / r["seconds"] for t, r in zip(results["tidal"], results["raw"], strict=True)
    ]
    print(f"\n{args.files} files, {results['raw'][0]['chunks']:.0f} chunks")
    print(f"{'':6} {'wall s':>12} {'peak RSS MB':>12}")
    for mode in ("raw", "tidal"):
        rows = results[mode]
        print(
            f"{mode:6} {span([r['seconds'] for r in rows], '{:.1f}'):>12} "
            f"{span([r['rss_mb'] for r in rows]):>12}"
        )
    print(f"tidal / raw: {span(ratios, '{:.2f}')}")


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
