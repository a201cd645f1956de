"""The OpenAI budget when the token limit binds: Tidal's wall time against the token floor.

    python bench/budget.py                      # 2 rounds, 20 s windows (~5 min)
    python bench/budget.py --jitter             # charge-to-arrival delay spread (the margin)

The fake OpenAI server (tests/fakes) enforces 100k TPM as OpenAI does, a bucket that starts
full and refills at TPM / window per second (``limit_model="bucket"``). Four threads embed
about 2.5x the TPM through Tidal's ``OpenAIEmbedder`` (the real ``openai`` client) and a
``RateBudget`` of the same TPM, in this process's memory. The minute is shortened to
``--window`` seconds (``TIDAL_OPENAI_WINDOW_SECONDS`` does the same in a run), so a round takes
seconds, not minutes; every time below scales with it.

The floor: the first TPM go at once, the rest at the refill rate, (T - TPM) / TPM windows for T
tokens. Reported per budget: wall time from the first charge to the last answer, its ratio to
the floor, 429s, and the seconds the server's bucket sat full (refill thrown away). ``old``
is the moving-window budget this replaced, loaded from git (commit ``OLD``) when the
``limits`` library is still installed; it is skipped otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "sk-bench"
TPM = 100_000
OLD = "c822fb9"  # the last commit with the moving-window RateBudget
WORDS = [
    "itinerary",
    "planner",
    "offline",
    "maps",
    "expense",
    "split",
    "traveller",
    "checkout",
    "onboarding",
]


def texts(total_tokens: int, per_text: int = 500) -> list[str]:
    """Distinct texts of about ``per_text`` tokens each, ``total_tokens`` in all."""
    from tidal.chunking import count_tokens

    texts, tokens, i = [], 0, 0
    while tokens < total_tokens:
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(per_text)]
        text = f"note {i}: " + " ".join(words)
        texts.append(text)
        tokens += count_tokens(text)
        i += 1
    return texts


def old_budget_class() -> Any | None:
    """The moving-window RateBudget from git, or None if it cannot be loaded here."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{OLD}:tidal/embedders/ratelimit.py"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        spec = importlib.util.spec_from_loader("old_ratelimit", loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        exec(compile(source, "old_ratelimit.py", "exec"), module.__dict__)  # noqa: S102
        module.RateBudget.calibrate = lambda self, *args, **kwargs: None  # it had none
        return module.RateBudget
    except (subprocess.CalledProcessError, ImportError, FileNotFoundError):
        return None


def one(kind: str, window: int, batch: list[list[str]], threads: int) -> dict[str, float]:
    """Send every batch through ``threads`` threads; what the server and the clock saw."""
    from tests.fakes.openai_server import FakeOpenAI
    from tidal.embedders.openai import OpenAIEmbedder
    from tidal.embedders.ratelimit import RateBudget

    budget_class = RateBudget if kind == "new" else old_budget_class()
    with FakeOpenAI(api_key=KEY, limit_model="bucket") as api:
        api.limit(rpm=10_000, tpm=TPM, window_seconds=window)
        budget = budget_class(
            None, rpm=10_000, tpm=TPM, namespace=f"bench:{kind}:{time.time()}",
            window_seconds=window,
        )  # fmt: skip
        embedder = OpenAIEmbedder(api_key=KEY, base_url=api.base_url, budget=budget)
        queue = list(batch)
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    texts = queue.pop()
                embedder.embed(texts)

        started = time.perf_counter()
        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.perf_counter() - started
        statuses = api.statuses()
        if statuses.count(200) != len(batch):
            sys.exit(f"{kind}: {statuses.count(200)} of {len(batch)} batches answered")
        tokens = sum(r["tokens"] for r in api.requests if r["status"] == 200)
        floor = max(0.0, (tokens - TPM) / TPM * window)
        return {
            "wall": wall,
            "floor": floor,
            "tokens": tokens,
            "ratio": wall / floor,
            "429": statuses.count(429),
            "admitted": statuses.count(200),
            "full_s": api.full_seconds["tokens"],
        }


def jitter(threads: int, calls: int, redis_url: str | None) -> None:
    """Charge-to-arrival delay of each request, and its spread: what the margin must cover."""
    from tests.fakes.openai_server import FakeOpenAI
    from tidal.embedders.openai import OpenAIEmbedder
    from tidal.embedders.ratelimit import RateBudget

    charged: dict[str, float] = {}
    local = threading.local()

    class Recording(RateBudget):
        def acquire(self, tokens: int) -> float:
            slept = super().acquire(tokens)
            charged[local.first] = time.monotonic()
            return slept

    with FakeOpenAI(api_key=KEY) as api:
        budget = Recording(redis_url, rpm=10**6, tpm=10**9, namespace=f"bench:j:{time.time()}")
        embedder = OpenAIEmbedder(api_key=KEY, base_url=api.base_url, budget=budget)

        def work(n: int) -> None:
            for i in range(calls):
                local.first = f"jitter {n} {i}"
                embedder.embed([local.first, "and a second text"])

        pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        delays = sorted(r["time"] - charged[r["first"]] for r in api.requests)
    low = delays[0]
    spread = [d - low for d in delays]
    q = statistics.quantiles(spread, n=1000)
    print(
        f"{'redis' if redis_url else 'memory'} budget, {threads} threads, {len(delays)} requests:"
        f" delay min {low * 1000:.1f} ms; spread above min: median {q[499] * 1000:.1f} ms,"
        f" p99 {q[989] * 1000:.1f} ms, p99.9 {q[998] * 1000:.1f} ms,"
        f" max {spread[-1] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=int, default=20, help="seconds standing for a minute")
    parser.add_argument("--times", type=float, default=2.5, help="tokens sent, in TPMs")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--jitter", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="for --jitter")
    args = parser.parse_args()
    if args.jitter:
        for url in (None, args.redis):
            jitter(8, 250, url)
        return

    from bench.common import span

    everything = texts(int(args.times * TPM))
    batches = [everything[i : i + 10] for i in range(0, len(everything), 10)]  # ~5k tokens
    kinds = ["new", "old"] if old_budget_class() else ["new"]
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for round_ in range(args.rounds):
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
            r = one(kind, args.window, batches, args.threads)
            rows[kind].append(r)
            print(
                f"  {kind}: wall {r['wall']:.1f} s, floor {r['floor']:.1f} s, x{r['ratio']:.2f},"
                f" 429s {r['429']}, admitted {r['admitted']}, bucket full {r['full_s']:.1f} s",
                file=sys.stderr,
            )
    print(
        f"\n{TPM:,} TPM per {args.window} s window, bucket-model fake server, {args.threads}"
        f" threads, {rows['new'][0]['tokens']:,.0f} tokens ({args.times}x TPM) in"
        f" {rows['new'][0]['admitted']:.0f} requests; {args.rounds} round(s), min–max\n"
    )
    print("| budget | wall (s) | token floor (s) | wall / floor | 429s | server bucket full (s) |")
    print("|---|---|---|---|---|---|")
    names = {"new": "refilling bucket (GCRA)", "old": "moving window (before)"}
    for kind, rs in rows.items():
        print(
            f"| {names[kind]} | {span([r['wall'] for r in rs], '{:.1f}')}"
            f" | {span([r['floor'] for r in rs], '{:.1f}')}"
            f" | {span([r['ratio'] for r in rs], '{:.2f}')} | {span([r['429'] for r in rs])}"
            f" | {span([r['full_s'] for r in rs], '{:.1f}')} |"
        )


if __name__ == "__main__":
    main()
