"""Files against a Postgres that is far away: Supabase from a worker is 10-50 ms a round trip.

    python bench/remote_db.py [--rtt 20] [--files 96] [--rounds 2] [--repo PATH ...]

Puts a proxy that holds every packet ``rtt / 2`` each way between the store and an embedded
Postgres (in a process of its own, so the run's threads do not slow it), then ingests generated
files with the real ``Pipeline`` and ``PostgresStore`` and an embedder that answers in 0.3 s
like the fake OpenAI server: one file at a time (what one file pays in round trips) and
``--concurrency`` at once (what the pool and the claims allow). Each ``--repo`` is a checkout
(``git worktree add /tmp/before <commit>``) timed the same way, interleaved round by round;
its store gets the pool its own ``build_pipeline`` would give it (``--pool``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent.parent


def proxy(rtt: float, socket_path: str) -> None:
    """Forward TCP on a free port to the Unix socket, holding each packet rtt/2 each way."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(rtt / 2)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_unix_connection(socket_path)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(serve())


def one(url: str, files: int, concurrency: int, pool: int) -> dict[str, float]:
    """Ingest ``files`` into a fresh database at ``url`` with this checkout's code."""
    from concurrent.futures import ThreadPoolExecutor

    from tidal.chunking import ChunkingOptions
    from tidal.embedders.hashing import HashEmbedder
    from tidal.pipeline import Pipeline
    from tidal.sources.memory import MemorySource
    from tidal.store.postgres import PostgresStore

    class Answers(HashEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            time.sleep(0.3)  # the fake OpenAI server's answer
            return super().embed(texts)

    def text(i: int) -> str:  # every chunk of every file its own: nothing comes from the cache
        parts = (f"## Part {j}\n\n" + f"Part {j} of doc {i} says a thing. " * 40 for j in range(6))
        return f"# Doc {i}\n\n" + "\n\n".join(parts)

    source = MemorySource({f"prds/{i}.md": text(i).encode() for i in range(files)})
    store = PostgresStore(url, dimension=8, pool_size=pool)
    pipeline = Pipeline(
        source=source, embedder=Answers(dimension=8), store=store, chunking=ChunkingOptions(256, 32)
    )
    listed = list(source.list())
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool_:
        results = list(pool_.map(pipeline.ingest, listed))
    wall = time.perf_counter() - started
    store.close()
    assert {r.status for r in results} == {"ingested"}, results
    return {"wall": wall, "per_file": sum(r.seconds for r in results) / len(results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", type=float, default=20.0, help="round trip to Postgres, ms")
    parser.add_argument("--files", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--pool", type=int, default=7, help="this checkout's pool (connections - 1)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="PATH[:POOL]",
        help="another checkout to time, with its pool (an old one held a connection per file)",
    )
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--proxy", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        proxy(float(args.proxy[0]), args.proxy[1])
        return
    if args.one:
        url, files, concurrency, pool = args.one
        print(json.dumps(one(url, int(files), int(concurrency), int(pool))))
        return

    # Only here: a child (``--one``) imports ``tidal`` from its checkout's PYTHONPATH.
    sys.path.insert(0, str(HERE))
    from bench.common import Databases, span

    work = Path(tempfile.mkdtemp(prefix="tidal-remote-"))
    databases = Databases(work / "pg")
    socket = Path(parse_qs(urlsplit(databases.base).query)["host"][0]) / ".s.PGSQL.5432"
    relay = subprocess.Popen(
        [sys.executable, __file__, "--proxy", str(args.rtt / 1000), str(socket)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert relay.stdout is not None
    port = int(relay.stdout.readline())
    checkouts = [(str(HERE), args.pool)] + [
        (r.split(":")[0], int(r.split(":")[1]) if ":" in r else args.pool) for r in args.repo
    ]
    results: dict[tuple[str, int, int], list[dict[str, float]]] = {}
    try:
        for round_ in range(args.rounds):
            for repo, pool in checkouts if round_ % 2 == 0 else checkouts[::-1]:
                for concurrency in (1, args.concurrency):
                    files = args.files if concurrency > 1 else max(args.files // 6, 8)
                    name = urlsplit(databases.fresh("remote")).path.lstrip("/")
                    url = f"postgresql://postgres@127.0.0.1:{port}/{name}"
                    out = subprocess.run(
                        [sys.executable, __file__, "--one", url, str(files), str(concurrency)]
                        + [str(pool)],
                        env={**os.environ, "PYTHONPATH": repo},
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    results.setdefault((repo, pool, concurrency), []).append(result)
                    print(
                        f"  round {round_} {repo} pool {pool} x{concurrency}:"
                        f" {result['wall']:.2f} s, {result['per_file']:.3f} s a file",
                        file=sys.stderr,
                    )
    finally:
        relay.kill()
    print(f"\nPostgres {args.rtt:g} ms away; an embedder answering in 0.3 s")
    print(
        "\n| checkout | pool | one file at a time: s a file | "
        f"{args.files} files, {args.concurrency} in flight: wall s |"
    )
    print("|---|---|---|---|")
    for repo, pool in checkouts:
        single = [r["per_file"] for r in results[(repo, pool, 1)]]
        many = [r["wall"] for r in results[(repo, pool, args.concurrency)]]
        print(f"| {repo} | {pool} | {span(single, '{:.3f}')} | {span(many, '{:.2f}')} |")


if __name__ == "__main__":
    main()
