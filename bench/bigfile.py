"""Peak memory and time of the largest files Tidal accepts, one file per run.

    python bench/bigfile.py                 # 3 shapes at 10 MB (the default size cap), ~5 min
    python bench/bigfile.py --mb 5 --shapes json
    python bench/bigfile.py --shapes json-small --existing 1300   # into an existing index too

Each shape is generated just under ``--mb`` megabytes, alone in a folder, and run through
``python flows/ingest.py`` as a user runs it (temporary Prefect server and all), against the fake
OpenAI server (1536-dimension vectors, no rate limit) and a fresh database on one embedded
Postgres. Reported: the flow process's peak RSS (VmHWM), wall time, chunks stored. With
``--existing N``, each file is also run into an index already holding N generated files (their
first run untimed), and the wall time is compared with the run into an empty database.

Shapes:
  json-small    a design with tens of thousands of small components (the worst case: many
                short sections, so many chunks)
  markdown      a PRD with many headed sections of a few paragraphs
  text          plain prose with no structure at all
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "sk-bench"


def _json_small(rng: random.Random, size: int) -> str:
    from bench.corpus import WORDS, _sentence

    components: list[dict[str, object]] = []
    text = ""
    while True:
        batch = [
            {"type": rng.choice(WORDS), "label": rng.choice(WORDS), "behavior": _sentence(rng)}
            for _ in range(500)
        ]
        components.extend(batch)
        text = json.dumps({"title": "Huge design", "screens": [{"components": components}]})
        if len(text) > size * 0.97:
            return text


def _markdown(rng: random.Random, size: int) -> str:
    from bench.corpus import _sentence

    parts: list[str] = ["# A very long PRD\n"]
    total, section = 0, 0
    while total < size * 0.97:
        section += 1
        body = "\n\n".join(
            " ".join(_sentence(rng) for _ in range(rng.randint(3, 8)))
            for _ in range(rng.randint(1, 4))
        )
        part = f"\n## Section {section}\n\n{body}\n"
        parts.append(part)
        total += len(part)
    return "".join(parts)


def _text(rng: random.Random, size: int) -> str:
    from bench.corpus import _sentence

    parts: list[str] = []
    total = 0
    while total < size * 0.97:
        part = _sentence(rng) + " "
        parts.append(part)
        total += len(part)
    return "".join(parts)


SHAPES = {
    "json-small": ("designs/huge/design.json", _json_small),
    "markdown": ("prds/huge.md", _markdown),
    "text": ("prds/huge.txt", _text),
}


def one() -> dict[str, float]:
    """One flow run in this process, configured by the environment."""
    from bench.common import peak_rss_mb
    from flows.ingest import tidal

    started = time.perf_counter()
    summary = tidal()
    return {
        "run_seconds": time.perf_counter() - started,
        "rss_mb": peak_rss_mb(),
        "ingested": summary.counts["ingested"],
        "failed": summary.counts["failed"],
        "chunks": summary.chunks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=9.9, help="size of each file, MB")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--existing", type=int, default=0, help="also into an index of N files")
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --existing: rounds, alternating the order"
    )
    args = parser.parse_args()

    from bench.common import Databases
    from tests.fakes.openai_server import FakeOpenAI

    work = Path(tempfile.mkdtemp(prefix="tidal-bigfile-"))
    from bench.common import stop_local_servers_at_exit

    stop_local_servers_at_exit(work)
    databases = Databases(work / "pg")
    rng = random.Random(7)
    print(f"{'shape':12} {'MB':>5} {'chunks':>7} {'wall s':>7} {'peak RSS MB':>12}")
    with FakeOpenAI(api_key=KEY) as api:
        for shape in args.shapes.split(","):
            name, make = SHAPES[shape]
            corpus = work / shape
            (corpus / name).parent.mkdir(parents=True)
            text = make(rng, int(args.mb * 1_000_000))
            (corpus / name).write_text(text)
            del text
            wall, r = _flow(corpus, databases.fresh(), api, work)
            size = (corpus / name).stat().st_size / 1e6
            print(
                f"{shape:12} {size:5.1f} {r['chunks']:7.0f} {wall:7.0f} {r['rss_mb']:12.0f}",
                flush=True,
            )
            api.requests.clear()
            if args.existing:
                from bench.common import span
                from bench.corpus import generate

                existing = work / f"{shape}-existing"
                generate(existing, args.existing, seed=13)
                ratios = []
                for round_ in range(args.rounds):
                    database = databases.fresh()
                    first, _ = _flow(existing, database, api, work)  # untimed: the index
                    (existing / name).parent.mkdir(parents=True, exist_ok=True)
                    (existing / name).write_bytes((corpus / name).read_bytes())
                    if round_ % 2:  # alternate which of the pair runs first
                        into, r2 = _flow(existing, database, api, work)
                        alone, _ = _flow(corpus, databases.fresh(), api, work)
                    else:
                        alone, _ = _flow(corpus, databases.fresh(), api, work)
                        into, r2 = _flow(existing, database, api, work)
                    (existing / name).unlink()
                    ratios.append(into / alone)
                    print(
                        f"{'':12} round {round_ + 1}: into {args.existing} files (their run "
                        f"{first:.0f} s) {into:.0f} s, alone {alone:.0f} s: {into / alone:.2f}x, "
                        f"peak RSS {r2['rss_mb']:.0f} MB",
                        flush=True,
                    )
                    api.requests.clear()
                print(
                    f"{'':12} into {args.existing} files against alone: {span(ratios, '{:.2f}')}x"
                )


def _flow(corpus: Path, database: str, api, work: Path) -> tuple[float, dict[str, float]]:  # type: ignore[no-untyped-def]
    """One ``--one`` run of ``corpus`` into ``database``: its wall time and what it reported."""
    from bench.common import openai_run_env

    env = openai_run_env(
        corpus,
        database,
        api.base_url,
        KEY,
        work,
        TIDAL_MAX_FILE_MB="40",
        PREFECT_HOME=str(work / "prefect"),
        PREFECT_LOGGING_LEVEL="INFO",
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--one"], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{corpus} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    for line in (done.stdout + done.stderr).splitlines():
        if "built the vector index" in line or "the vector index is dropped" in line:
            print(f"{'':12} {line.split(' - ')[-1].strip()}", flush=True)
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1:] == ["--one"]:
        print(json.dumps(one()))
    else:
        main()
