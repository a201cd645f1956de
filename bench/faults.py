"""A bad day, measured: what outages, a 429 storm and large files cost a real run.

    python bench/faults.py [--files 1000] [--storm-files 180] [--large 24] [--only NAME ...]

Each scenario runs the real flow (``python flows/ingest.py``, a Prefect server started here)
over a bucket on the fake Storage server, embedding through the fake OpenAI server, into a
fresh database on one embedded Postgres, with every setting at its default. Faults are injected
from this process while the run goes:

* ``storage-40s``: Storage killed (connections refused, keep-alives dropped) for 40 s, once a
  fifth of the files were downloaded;
* ``embeddings-30s`` and ``embeddings-120s``: the embeddings API killed likewise;
* ``storm``: a server allowing 60 requests per minute (sliding window, ``Retry-After: 1``)
  while ``TIDAL_OPENAI_RPM`` is left at 3,000, over ``--storm-files`` small files (three
  minutes of requests at that rate);
* ``large``: the default token rate (1 M a minute), 32 files in flight, over a bucket where
  ``--large`` files of ~40 k tokens sit among the small ones; the server enforces the same
  limit as a refilling bucket. The window is 6 s (100 k tokens per 6 s, the server's and
  Tidal's), so the run binds on tokens within a minute and one 32 k-token request is a third
  of the bucket: harsher for fairness than a minute's window. The token floor is the least
  time the limit allows.

Printed per scenario: files failed (target 0), attempts spent against files ingested,
downloads beyond one per file, 429s answered, and wall time against the same corpus without
the fault (for ``large``: against its token floor).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVICE_KEY = "bench-faults-service-role-key"
OPENAI_KEY = "sk-bench-faults"


@dataclass
class Outcome:
    name: str
    files: int
    failed: int
    ingested: int
    attempts: int
    redownloads: int
    rate_limited: int
    late_429s: int
    """429s answered more than a minute after the first request."""
    requests_span: float
    """Seconds from the first embeddings request to the last: the part a budget can bind."""
    wall: float
    exit_code: int


def _bucket(fake, corpus: Path) -> list[str]:  # type: ignore[no-untyped-def]
    paths = []
    for path in sorted(corpus.rglob("*")):
        if path.is_file():
            rel = path.relative_to(corpus).as_posix()
            fake.put("knowledge", rel, path.read_bytes())
            paths.append(rel)
    return paths


def _large_corpus(folder: Path, small: int, large: int, seed: int) -> None:
    """``small`` files from bench/corpus.py, and ``large`` PRDs of ~40 k tokens each."""
    from bench.corpus import WORDS, generate

    generate(folder, small, seed=seed)
    rng = random.Random(seed)
    (folder / "prds").mkdir(parents=True, exist_ok=True)
    for i in range(large):
        sections = []
        for s in range(60):
            body = " ".join(" ".join(rng.choices(WORDS, k=12)) + "." for _ in range(45))
            sections.append(f"## Section {s}\n\n{body}\n")
        (folder / f"prds/large-{i:03d}.md").write_text(f"# Large PRD {i}\n\n" + "\n".join(sections))


def _run(
    name: str,
    corpus: Path,
    work: Path,
    databases,  # type: ignore[no-untyped-def]
    api_url: str,
    *,
    fault: Callable[[object, object], None] | None = None,
    limit: dict[str, object] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Outcome:
    from tests.fakes.openai_server import FakeOpenAI
    from tests.fakes.storage_server import FakeStorage

    data = work / f"data-{name}"
    with FakeStorage(service_key=SERVICE_KEY) as storage, FakeOpenAI(api_key=OPENAI_KEY) as api:
        paths = _bucket(storage, corpus)
        if limit:
            api.limit(**limit)  # type: ignore[arg-type]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
        env.update(
            PREFECT_API_URL=api_url,
            PREFECT_HOME=str(work / "prefect"),
            PREFECT_LOGGING_LEVEL="WARNING",
            TIDAL_SOURCE="supabase://knowledge",
            SUPABASE_URL=storage.url,
            SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY,
            TIDAL_EMBEDDER="openai",
            OPENAI_API_KEY=OPENAI_KEY,
            OPENAI_BASE_URL=api.base_url,
            TIDAL_DATABASE_URL=databases.fresh(),
            TIDAL_DATA_DIR=str(data),
            **(extra_env or {}),
        )
        injector = None
        if fault is not None:
            injector = threading.Thread(target=fault, args=(storage, api), daemon=True)
            injector.start()
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(ROOT / "flows" / "ingest.py")],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if injector is not None:
            injector.join(timeout=300)
        downloads = Counter(storage.downloads)
        rate_limited = api.statuses().count(429)
        first = min((r["time"] for r in api.requests), default=0.0)
        late = sum(1 for r in api.requests if r["status"] == 429 and r["time"] > first + 60)
        span = max((r["time"] for r in api.requests), default=0.0) - first
    reports = sorted((data / "reports").glob("run-*.csv"))
    if not reports:
        sys.exit(f"{name}: no report\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    with reports[-1].open() as handle:
        rows = list(csv.DictReader(handle))
    statuses = Counter(r["status"] for r in rows)
    if done.returncode not in (0, 1):
        print(f"  {name}: exit {done.returncode}: {done.stderr.strip()[-500:]}", file=sys.stderr)
    outcome = Outcome(
        name=name,
        files=len(paths),
        failed=statuses["failed"] + statuses["stopped"],
        ingested=statuses["ingested"],
        attempts=sum(int(r["attempts"] or 0) for r in rows),
        redownloads=sum(n - 1 for n in downloads.values() if n > 1),
        rate_limited=rate_limited,
        late_429s=late,
        requests_span=span,
        wall=wall,
        exit_code=done.returncode,
    )
    print(f"  {name}: {outcome}", file=sys.stderr)
    return outcome


def _outage(kill_when: Callable[[object, object], bool], which: str, seconds: float):  # type: ignore[no-untyped-def]
    def fault(storage, api) -> None:  # type: ignore[no-untyped-def]
        server = storage if which == "storage" else api
        while not kill_when(storage, api):
            time.sleep(0.05)
        server.kill()
        time.sleep(seconds)
        server.revive()

    return fault


def _server(home: Path, port: int) -> subprocess.Popen[bytes]:
    from bench.runners import _server as start

    return start(home, port)


def _row(outcome: Outcome, against: float, label: str) -> str:
    return (
        f"| {outcome.name} | {outcome.failed} | {outcome.attempts} / {outcome.ingested} | "
        f"{outcome.redownloads} | {outcome.rate_limited} ({outcome.late_429s}) | "
        f"{outcome.wall:.1f} | "
        f"{outcome.wall / against:.2f}x {label} | {outcome.exit_code} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--storm-files", type=int, default=180)
    parser.add_argument("--large", type=int, default=24, help="large files in the 'large' bucket")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    args = parser.parse_args()

    from bench.common import Databases
    from bench.corpus import generate
    from tests.services import free_port

    wanted = set(
        args.only or ["storage-40s", "embeddings-30s", "embeddings-120s", "storm", "large"]
    )
    work = Path(tempfile.mkdtemp(prefix="tidal-faults-"))
    corpus, small, large = work / "corpus", work / "storm", work / "large"
    generate(corpus, args.files, seed=18)
    generate(small, args.storm_files, seed=19)
    _large_corpus(large, args.files // 4, args.large, seed=20)
    databases = Databases(work / "pg")
    port = free_port()
    server = _server(work / "prefect", port)
    api_url = f"http://127.0.0.1:{port}/api"
    rows: list[str] = []

    def a_fifth_downloaded(storage, api) -> bool:  # type: ignore[no-untyped-def]
        return len(storage.downloads) >= args.files // 5

    def a_fifth_embedded(storage, api) -> bool:  # type: ignore[no-untyped-def]
        return len(api.requests) >= args.files // 5

    try:
        if wanted & {"storage-40s", "embeddings-30s", "embeddings-120s"}:
            base = _run("no fault", corpus, work, databases, api_url)
            rows.append(_row(base, base.wall, "no fault"))
            for name, which, seconds, when in (
                ("storage-40s", "storage", 40, a_fifth_downloaded),
                ("embeddings-30s", "api", 30, a_fifth_embedded),
                ("embeddings-120s", "api", 120, a_fifth_embedded),
            ):
                if name in wanted:
                    fault = _outage(when, which, seconds)
                    outcome = _run(name, corpus, work, databases, api_url, fault=fault)
                    rows.append(_row(outcome, base.wall, "no fault"))
        if "storm" in wanted:
            calm = _run("storm: no limit", small, work, databases, api_url)
            rows.append(_row(calm, calm.wall, "no limit"))
            storm = _run(
                "storm: 60 RPM server",
                small,
                work,
                databases,
                api_url,
                limit={"rpm": 60, "window_seconds": 60.0, "model": "window"},
            )
            rows.append(_row(storm, calm.wall, "no limit"))
        if "large" in wanted:
            from tidal.chunking import ChunkingOptions, chunk_text
            from tidal.parsing import parse

            window, tpm = 6, 100_000
            tokens = 0
            for path in large.rglob("*"):
                if path.is_file():
                    rel = path.relative_to(large).as_posix()
                    text = parse(rel, path.read_bytes()).text
                    tokens += sum(c.token_count for c in chunk_text(text, ChunkingOptions(512, 64)))
            floor = max(0.0, (tokens - tpm) / tpm * window)
            outcome = _run(
                "large files, default budget",
                large,
                work,
                databases,
                api_url,
                limit={"tpm": tpm, "window_seconds": float(window), "model": "bucket"},
                extra_env={
                    "TIDAL_OPENAI_WINDOW_SECONDS": str(window),
                    "TIDAL_OPENAI_TPM": str(tpm),
                },
            )
            print(f"  large: {tokens} tokens, floor {floor:.1f} s", file=sys.stderr)
            rows.append(_row(outcome, max(floor, 1e-9), f"token floor ({floor:.0f} s)"))
            rows.append(
                f"| ... its embeddings requests, first to last | | | | | "
                f"{outcome.requests_span:.1f} | "
                f"{outcome.requests_span / floor:.2f}x token floor | |"
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbench/faults.py, {args.files} files ({args.storm_files} for the storm), defaults\n")
    print("| scenario | files failed | attempts / files ingested | re-downloads "
          "| 429s (after the first minute) | wall (s) | wall against | exit |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
