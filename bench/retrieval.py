"""Retrieval quality: does the index find the file that answers a question? Tidal against the
splitters a user would pick instead, every method with the same local model (issue 21, item 6).

    pip install -e ".[bench]"          # LangChain, LlamaIndex and rank-bm25 (bench extra only)
    python bench/retrieval.py          # both sets, every method (4.8 CPU-min: 3-8 min on 2 cores)
    python bench/retrieval.py --sets sample --methods tidal,bm25 --misses

Question sets (``bench/questions/``, frozen before anything was scored): ``sample`` over
``examples/corpus``, ``generated`` over the corpus ``bench/retrieval_corpus.py`` writes from its
default seed (its digest is checked first, so the answers still point at the right files).

Each method indexes the corpus once, then answers every question with its top 10 chunks. Chunks
map to files; a question's rank is the rank of the first answering file among the distinct files
of those chunks (several answering files: the first of any). Reported at file level, overall and
by slice (answered by a design or a PRD; keyword or conceptual question): recall@1, recall@5 and
MRR@10 (1 / rank, 0 when no answering file is in the top 10 chunks).

Methods, all with all-MiniLM-L6-v2 (the bundled model, loaded once through Tidal's
``LocalEmbedder``, so every method's vectors come from the same model, normalised, cosine):

* ``tidal``: Tidal's real run (``prepare_run`` + ``run_in_threads``: parse, chunk, embed, write)
  into a fresh embedded Postgres, searched through ``PostgresStore.search`` (``match_documents``);
* ``tidal-hybrid``: the same index through ``PostgresStore.hybrid_search`` when this commit has
  it (full text and vectors fused in SQL); "not available at this commit" otherwise;
* ``tidal-before``, ``tidal-readable``, ``tidal-context`` (not run unless named in
  ``--methods``): Tidal's vector search over an index built as before issue 21's items 4 and 5
  (designs as ``a.b[0].c: value`` key paths, chunked by top-level key group as at
  ``BASELINE``; chunks embedded bare), with item 4 alone (designs rendered as headed text) and
  with item 5 alone (key paths, each chunk embedded under its title and section path);
* ``langchain``: ``RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)`` over
  each file's raw text (JSON too), exact cosine top 10;
* ``llamaindex``: ``SimpleDirectoryReader`` + ``SentenceSplitter()`` with its defaults (1024
  tokens, 200 overlap), each node embedded as LlamaIndex embeds it (``MetadataMode.EMBED``:
  ``file_path: designs/...`` above the text; made relative to the corpus), exact cosine top 10;
* ``bm25``: ``rank_bm25.BM25Okapi`` over Tidal's stored chunks (lowercased ``\\w+`` tokens);
* ``rrf``: reciprocal rank fusion (k = 60) of ``tidal``'s and ``bm25``'s top 40 chunks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOP_K = 10
FUSE_DEPTH = 40
"""How deep each ranking goes into reciprocal rank fusion (``match_documents`` returns 40 rows
at most at pgvector's default ``hnsw.ef_search``: issue 21, item 1)."""
RRF_K = 60
BASELINE = "9621017"
"""The last commit before designs were rendered as text and chunks embedded in context."""
GENERATED_DIGEST = "32842f6144f24e27"
"""What ``bench/retrieval_corpus.py`` wrote when ``bench/questions/generated.jsonl`` was written."""
SLICES = (("design", "kind"), ("prd", "kind"), ("keyword", "style"), ("conceptual", "style"))
NAMES = {
    "tidal": "Tidal vector (`match_documents`)",
    "tidal-hybrid": "Tidal hybrid (`hybrid_search`)",
    "langchain": "LangChain `RecursiveCharacterTextSplitter` 1000/200",
    "llamaindex": "LlamaIndex `SentenceSplitter` defaults",
    "bm25": "BM25 over Tidal's chunks",
    "rrf": "RRF of Tidal vector + BM25 (k=60)",
    "tidal-before": "Tidal vector before items 4-5 (key paths, bare chunks)",
    "tidal-readable": "Tidal vector, item 4 only (readable designs, bare chunks)",
    "tidal-context": "Tidal vector, item 5 only (key paths, chunks in context)",
}
OPT_IN = ("tidal-before", "tidal-readable", "tidal-context")

Hit = tuple[str, str]
"""A retrieved chunk: (file path relative to the corpus, chunk key unique within the method)."""
Searcher = Callable[[str], list[Hit]]


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    kind: str
    style: str


@dataclass
class Corpus:
    name: str
    root: Path
    questions: list[Question]
    files: list[str]
    """Every file's path relative to ``root`` (read while the corpus exists)."""
    shared: dict[str, Any] = field(default_factory=dict)
    """What methods over this corpus share: Tidal's index, its chunks, their BM25 rankings."""


class Unavailable(Exception):
    """A method this checkout or environment cannot run (said in its table row)."""


# -- the model, shared by every method ----------------------------------------------------------


class Encoder:
    """Tidal's ``LocalEmbedder`` (the bundled all-MiniLM-L6-v2), with each text encoded once."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            for text, vector in zip(todo, self.embedder.embed(todo), strict=True):
                self._cache[text] = vector
        return np.stack([self._cache[t] for t in texts])


def _cosine_searcher(encode: Encoder, texts: list[str], hits: list[Hit]) -> Searcher:
    """Exact cosine over ``texts`` (what an in-memory vector store does at this size)."""
    matrix = encode(texts)

    def search(question: str) -> list[Hit]:
        scores = matrix @ encode([question])[0]
        return [hits[i] for i in np.argsort(-scores, kind="stable")[:TOP_K]]

    return search


# -- the methods: each indexes a corpus and returns how to ask it ------------------------------


def tidal_index(
    corpus: Corpus, encode: Encoder, work: Path, variant: str = "shipped"
) -> dict[str, Any]:
    """Tidal's real run over the corpus into a fresh database: once per corpus and variant."""
    shared = corpus.shared if variant == "shipped" else corpus.shared.setdefault(variant, {})
    if "store" in shared:
        return shared
    import os

    import psycopg

    from bench.common import Databases
    from tidal.run import run_in_threads
    from tidal.runtime import prepare_run
    from tidal.settings import load_settings

    url = Databases(work / "tidal-data").fresh(f"retrieval_{corpus.name}_{variant}")
    # A secret, so the run's pipeline reads it from the environment (``PipelineSpec``).
    os.environ["TIDAL_DATABASE_URL"] = url
    settings = load_settings(source=str(corpus.root), data_dir=work / f"data-{variant}")
    with _variant(variant):
        run = prepare_run(settings)
        summary = run_in_threads(run, concurrency=settings.concurrency)
    if summary.counts.get("failed"):
        raise SystemExit(f"tidal: {summary.counts['failed']} files failed over {corpus.root}")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select source_path, chunk_index, content from documents order by 1, 2"
        ).fetchall()
    shared.update(store=run.pipeline.store, rows=rows, settings=settings)
    shared["chunking"] = (
        f"{settings.effective_chunk_tokens}/{settings.effective_chunk_overlap} cl100k tokens"
    )
    if run.pipeline.embedder is not encode.embedder:  # one model for every method
        raise SystemExit("tidal opened a second embedder; the methods would not compare")
    return shared


@contextmanager
def _variant(name: str) -> Iterator[None]:
    """Tidal's pipeline with item 4 and/or item 5 of issue 21 taken out, for this run only."""
    import tidal.chunking
    import tidal.designs
    import tidal.pipeline

    saved = (tidal.designs.render, tidal.chunking.sections, tidal.pipeline.in_context)
    if name in ("before", "context"):  # designs as key paths, sections by top-level key group
        tidal.designs.render = _key_paths
        tidal.chunking.sections = _baseline_module("tidal/chunking.py").sections
    if name in ("before", "readable"):  # chunks embedded bare
        tidal.pipeline.in_context = lambda chunks, outline, title: chunks
    try:
        yield
    finally:
        tidal.designs.render, tidal.chunking.sections, tidal.pipeline.in_context = saved


def _key_paths(value: Any) -> str:
    """A design as ``BASELINE`` flattened it: one ``screens[2].components[0].label: Save``
    line per scalar."""
    from tidal.parsing import _leaves

    def text(leaf: Any) -> str:
        if isinstance(leaf, bool):
            return "true" if leaf else "false"
        return " ".join(leaf.split()) if isinstance(leaf, str) else str(leaf)

    return "\n".join(f"{k}: {text(v)}" if k else text(v) for k, v in _leaves(value, ""))


def _baseline_module(path: str) -> Any:
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    name = "baseline_" + Path(path).stem
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look themselves up there
    exec(compile(source, f"{BASELINE}:{path}", "exec"), module.__dict__)
    return module


def tidal(corpus: Corpus, encode: Encoder, work: Path, variant: str = "shipped") -> Searcher:
    store = tidal_index(corpus, encode, work, variant)["store"]

    def search(question: str, limit: int = TOP_K) -> list[Hit]:
        hits = store.search(encode([question])[0], limit=limit)
        return [(h.source_path, f"{h.source_path}#{h.chunk_index}") for h in hits]

    return search


def tidal_hybrid(corpus: Corpus, encode: Encoder, work: Path) -> Searcher:
    from tidal.store.postgres import PostgresStore

    if not hasattr(PostgresStore, "hybrid_search"):
        raise Unavailable("not available at this commit")
    store = tidal_index(corpus, encode, work)["store"]

    def search(question: str) -> list[Hit]:
        hits = store.hybrid_search(question, encode([question])[0], limit=TOP_K)
        return [(h.source_path, f"{h.source_path}#{h.chunk_index}") for h in hits]

    return search


def langchain(corpus: Corpus, encode: Encoder, work: Path) -> Searcher:
    try:
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError:
        raise Unavailable("not installed (`pip install -e '.[bench]'`)") from None
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    texts, hits = [], []
    for rel in corpus.files:
        for i, chunk in enumerate(splitter.split_text((corpus.root / rel).read_text("utf-8"))):
            texts.append(chunk)
            hits.append((rel, f"{rel}#{i}"))
    corpus.shared["langchain_chunks"] = len(texts)
    return _cosine_searcher(encode, texts, hits)


def llamaindex(corpus: Corpus, encode: Encoder, work: Path) -> Searcher:
    try:
        from llama_index.core import SimpleDirectoryReader
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.core.schema import MetadataMode
    except ImportError:
        raise Unavailable("not installed (`pip install -e '.[bench]'`)") from None
    documents = SimpleDirectoryReader(str(corpus.root), recursive=True).load_data()
    for document in documents:
        # The one metadata field embedded by default is the absolute ``file_path``: relative to
        # the corpus, as a bucket's path would be, so results do not depend on the checkout's
        # (or the temporary folder's) location.
        path = Path(document.metadata["file_path"]).relative_to(corpus.root.resolve())
        document.metadata["file_path"] = path.as_posix()
    nodes = SentenceSplitter().get_nodes_from_documents(documents)
    texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    hits = [(n.metadata["file_path"], n.node_id) for n in nodes]
    corpus.shared["llamaindex_chunks"] = len(texts)
    return _cosine_searcher(encode, texts, hits)


_WORD = re.compile(r"\w+")


def _bm25(corpus: Corpus, encode: Encoder, work: Path) -> Callable[[str, int], list[Hit]]:
    shared = tidal_index(corpus, encode, work)
    if "bm25" not in shared:
        try:
            from rank_bm25 import BM25Okapi
        except ImportError:
            raise Unavailable("not installed (`pip install -e '.[bench]'`)") from None
        rows = shared["rows"]
        shared["bm25"] = BM25Okapi([_WORD.findall(content.lower()) for _, _, content in rows])
    index, rows = shared["bm25"], shared["rows"]

    def search(question: str, limit: int = TOP_K) -> list[Hit]:
        scores = index.get_scores(_WORD.findall(question.lower()))
        top = np.argsort(-scores, kind="stable")[:limit]
        return [(rows[i][0], f"{rows[i][0]}#{rows[i][1]}") for i in top]

    return search


def bm25(corpus: Corpus, encode: Encoder, work: Path) -> Searcher:
    return _bm25(corpus, encode, work)


def rrf(corpus: Corpus, encode: Encoder, work: Path) -> Searcher:
    """Tidal's vector ranking and BM25's over the same chunks, fused by 1 / (k + rank)."""
    vector, text = tidal(corpus, encode, work), _bm25(corpus, encode, work)

    def search(question: str) -> list[Hit]:
        fused: dict[Hit, float] = {}
        for ranking in (vector(question, FUSE_DEPTH), text(question, FUSE_DEPTH)):
            for rank, hit in enumerate(ranking, 1):
                fused[hit] = fused.get(hit, 0.0) + 1 / (RRF_K + rank)
        return sorted(fused, key=lambda h: -fused[h])[:TOP_K]

    return search


METHODS: dict[str, Callable[[Corpus, Encoder, Path], Searcher]] = {
    "tidal": tidal,
    "tidal-hybrid": tidal_hybrid,
    "langchain": langchain,
    "llamaindex": llamaindex,
    "bm25": bm25,
    "rrf": rrf,
    **{f"tidal-{v}": partial(tidal, variant=v) for v in ("before", "readable", "context")},
}


# -- scoring -----------------------------------------------------------------------------------


def file_rank(hits: list[Hit], answers: Sequence[str]) -> int | None:
    """1-based rank of the first answering file among the distinct files of ``hits``."""
    files = list(dict.fromkeys(path for path, _ in hits))
    return next((i for i, path in enumerate(files, 1) if path in answers), None)


def scores(ranks: list[int | None]) -> tuple[float, float, float]:
    """recall@1, recall@5, MRR@10 over a slice's questions."""
    n = len(ranks) or 1
    return (
        sum(r == 1 for r in ranks) / n,
        sum(r is not None and r <= 5 for r in ranks) / n,
        sum(1 / r for r in ranks if r is not None) / n,
    )


@dataclass
class Result:
    method: str
    ranks: dict[str, int | None] = field(default_factory=dict)
    top: dict[str, list[str]] = field(default_factory=dict)
    """Each question's first three distinct files, for ``--misses``."""
    unavailable: str | None = None
    index_seconds: float = 0.0
    query_seconds: float = 0.0


def evaluate(corpus: Corpus, method: str, encode: Encoder, work: Path) -> Result:
    result = Result(method)
    started = time.perf_counter()
    try:
        search = METHODS[method](corpus, encode, work)
    except Unavailable as exc:
        result.unavailable = str(exc)
        return result
    result.index_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for q in corpus.questions:
        hits = search(q.question)
        result.ranks[q.id] = file_rank(hits, q.answers)
        result.top[q.id] = list(dict.fromkeys(path for path, _ in hits))[:3]
    result.query_seconds = time.perf_counter() - started
    return result


# -- the corpora and the report ----------------------------------------------------------------


def load_questions(name: str) -> list[Question]:
    path = ROOT / "bench" / "questions" / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    return [
        Question(r["id"], r["question"], tuple(r["answers"]), r["kind"], r["style"]) for r in rows
    ]


def load_corpus(name: str, work: Path) -> Corpus:
    if name == "sample":
        root = ROOT / "examples" / "corpus"
    else:
        from bench.retrieval_corpus import digest, generate

        root = work / "generated"
        written = generate(root)
        if digest(root, written) != GENERATED_DIGEST:
            raise SystemExit(
                f"bench/retrieval_corpus.py now writes another corpus (digest "
                f"{digest(root, written)}, the questions were written against "
                f"{GENERATED_DIGEST}): restore the generator, or write a new question set"
            )
    corpus = Corpus(name, root, load_questions(name), _files(root))
    missing = {a for q in corpus.questions for a in q.answers if not (root / a).is_file()}
    if missing:
        raise SystemExit(f"{name}: answers name files the corpus lacks: {sorted(missing)}")
    return corpus


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def table(corpus: Corpus, results: list[Result]) -> str:
    qs = corpus.questions
    counts = {value: sum(getattr(q, attr) == value for q in qs) for value, attr in SLICES}
    files = corpus.files
    designs = sum(f.endswith(".json") for f in files)
    lines = [
        f"**{corpus.name}**: {len(files)} files ({designs} designs, {len(files) - designs} PRDs),"
        f" {len(qs)} questions ({counts['design']} design, {counts['prd']} PRD;"
        f" {counts['keyword']} keyword, {counts['conceptual']} conceptual)",
        "",
        "| method | R@1 | R@5 | MRR@10 | design R@1 / MRR | PRD R@1 / MRR"
        " | keyword R@1 / MRR | conceptual R@1 / MRR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.unavailable:
            lines.append(f"| {NAMES[r.method]} | {r.unavailable} |||||||")
            continue
        r1, r5, mrr = scores([r.ranks[q.id] for q in qs])
        cells = [f"{r1:.2f}", f"{r5:.2f}", f"{mrr:.2f}"]
        for value, attr in SLICES:
            s1, _, sm = scores([r.ranks[q.id] for q in qs if getattr(q, attr) == value])
            cells.append(f"{s1:.2f} / {sm:.2f}")
        lines.append(f"| {NAMES[r.method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def misses(corpus: Corpus, results: list[Result]) -> str:
    lines = []
    for r in results:
        if r.unavailable:
            continue
        wrong = [q for q in corpus.questions if r.ranks[q.id] != 1]
        lines.append(f"\n{corpus.name} · {r.method}: {len(wrong)} not at rank 1")
        for q in wrong:
            rank = r.ranks[q.id] or "-"
            got = ", ".join(r.top[q.id])
            lines.append(
                f"  {q.id} [{q.kind}/{q.style}] rank {rank}: {q.question}\n      got {got}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="sample,generated")
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m not in OPT_IN))
    parser.add_argument("--misses", action="store_true", help="list each method's misses")
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")

    from tidal.embedders.local import LocalEmbedder
    from tidal.runtime import _embedder_key, _embedders
    from tidal.settings import load_settings

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tidal-retrieval-"))
    # Tidal's run asks its process-wide cache for the embedder: putting this one there first
    # makes the run and every other method share one loaded model.
    embedder = LocalEmbedder()
    _embedders[_embedder_key(load_settings(source=str(ROOT)))] = embedder
    encode = Encoder(embedder)
    reports = []
    try:
        for name in args.sets.split(","):
            corpus = load_corpus(name, work)
            results = []
            for method in methods:
                result = evaluate(corpus, method, encode, work)
                results.append(result)
                print(
                    f"  {name:9} {method:12} index {result.index_seconds:5.1f} s, "
                    f"{len(corpus.questions)} questions {result.query_seconds:5.1f} s"
                    + (f" ({result.unavailable})" if result.unavailable else ""),
                    file=sys.stderr,
                )
            reports.append((corpus, results))
            for shared in (
                corpus.shared,
                *(corpus.shared.get(v.removeprefix("tidal-"), {}) for v in OPT_IN),
            ):
                if shared.get("store") is not None:
                    shared["store"].close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nall-MiniLM-L6-v2 (bundled), top {TOP_K} chunks, file-level; ", end="")
    chunks = [
        f"{c.name}: Tidal {len(c.shared['rows'])} chunks at {c.shared['chunking']}"
        for c, _ in reports
        if "rows" in c.shared
    ]
    for c, _ in reports:
        for variant in (m.removeprefix("tidal-") for m in OPT_IN):
            if "rows" in c.shared.get(variant, {}):
                chunks.append(f"{c.name}: Tidal {variant} {len(c.shared[variant]['rows'])}")
        for peer in ("langchain", "llamaindex"):
            if f"{peer}_chunks" in c.shared:
                chunks.append(f"{c.name}: {peer} {c.shared[f'{peer}_chunks']}")
    print("; ".join(chunks) + f"; {time.perf_counter() - started:.0f} s in all\n")
    for corpus, results in reports:
        print(table(corpus, results) + "\n")
    if args.misses:
        for corpus, results in reports:
            print(misses(corpus, results))


if __name__ == "__main__":
    main()
