"""What one stored chunk costs Postgres, by how the vector index is kept.

    python bench/inserts.py                       # 6,000 rows of 1536 dims, ~5 min
    python bench/inserts.py --rows 20000 --dimension 384

Each variant writes the same random unit vectors through ``PostgresStore.replace_file`` (files of
``--per-file`` chunks, each in its own transaction, as a run writes them) into a fresh database
on one embedded Postgres (pgserver's, with pgvector), then answers the same 50 queries, against
an exact scan, for recall@10. Variants:

  hnsw             the schema as shipped: HNSW index on ``vector`` kept up during the load
  no index         no vector index (the floor: heap, the other indexes, WAL)
  bulk, then hnsw  load with no vector index, then ``create index`` once at the end
  hnsw halfvec     HNSW on ``embedding::halfvec`` (half-precision graph, full-precision rows)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("hnsw", "no index", "bulk, then hnsw", "hnsw halfvec")


def _store(url: str, dimension: int, variant: str):  # type: ignore[no-untyped-def]
    import psycopg

    from tidal.store.postgres import PostgresStore

    store = PostgresStore(url, dimension=dimension)
    if variant == "hnsw":
        store.build_vector_index()  # live from the start: every insert keeps it up
    with psycopg.connect(url, autocommit=True) as conn:
        if variant != "hnsw":
            conn.execute("drop index if exists documents_embedding_idx")
        if variant == "hnsw halfvec":
            conn.execute(
                f"create index documents_embedding_half_idx on documents using hnsw "
                f"((embedding::halfvec({dimension})) halfvec_cosine_ops)"
            )
    return store


def _load(store, vectors: np.ndarray, per_file: int) -> None:  # type: ignore[no-untyped-def]
    from tidal.chunking import chunk_hash
    from tidal.records import Chunk, Document, EmbeddedChunk, SourceFile

    for start in range(0, len(vectors), per_file):
        path = f"designs/bench/file-{start // per_file:05d}.json"
        chunks = [
            EmbeddedChunk(Chunk(i, f"chunk {start + i}", 300, chunk_hash(f"{start + i}")), v)
            for i, v in enumerate(vectors[start : start + per_file])
        ]
        store.replace_file(
            SourceFile(path, 1, f"h{start}"),
            Document(path, "design", "x", path),
            chunks,
            fingerprint="bench",
            embedder="bench",
        )


def _recall(url: str, vectors: np.ndarray, queries: np.ndarray, variant: str, dim: int) -> float:
    import psycopg
    from pgvector.psycopg import register_vector

    from tidal.chunking import chunk_hash

    exact = np.argsort(-(vectors @ queries.T), axis=0)[:10].T
    found = 0
    expr = f"embedding::halfvec({dim}) <=> %s::halfvec({dim})" if "halfvec" in variant else None
    ids = {chunk_hash(str(k)): k for k in range(len(vectors))}
    with psycopg.connect(url) as conn:
        register_vector(conn)
        for q, truth in zip(queries, exact, strict=True):
            order = expr or "embedding <=> %s"
            rows = conn.execute(
                f"select chunk_hash from documents order by {order} limit 10",
                (q.astype(np.float32),),
            ).fetchall()
            found += len({ids[r[0]] for r in rows} & set(truth.tolist()))
    return found / (10 * len(queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--dimension", type=int, default=1536)
    parser.add_argument("--per-file", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import psycopg

    from bench.common import Databases, span

    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((args.rows, args.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.rows, 50, replace=False)] + 0.05 * rng.standard_normal(
        (50, args.dimension)
    ).astype(np.float32)
    databases = Databases(Path(tempfile.mkdtemp(prefix="tidal-inserts-")) / "pg")
    with psycopg.connect(databases.base) as conn:
        version = conn.execute(
            "select default_version from pg_available_extensions where name = 'vector'"
        ).fetchone()
    version = version[0] if version else "0"
    print(f"pgvector {version}, {args.rows} rows x {args.dimension} dims")
    variants = VARIANTS
    if tuple(int(x) for x in version.split(".")[:2]) < (0, 7):
        print("  (no halfvec before pgvector 0.7: that variant is left out)")
        variants = tuple(v for v in VARIANTS if "halfvec" not in v)

    seconds: dict[str, list[float]] = {v: [] for v in variants}
    recalls: dict[str, float] = {}
    for round_ in range(args.rounds):
        order = variants if round_ % 2 == 0 else tuple(reversed(variants))
        for variant in order:
            url = databases.fresh("inserts")
            store = _store(url, args.dimension, variant)
            started = time.perf_counter()
            _load(store, vectors, args.per_file)
            if variant == "bulk, then hnsw":
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(
                        "create index documents_embedding_idx on documents"
                        " using hnsw (embedding vector_cosine_ops)"
                    )
            seconds[variant].append(time.perf_counter() - started)
            store.close()
            if round_ == 0 and variant != "no index":
                recalls[variant] = _recall(url, vectors, queries, variant, args.dimension)
            print(f"  round {round_ + 1} {variant:16} {seconds[variant][-1]:7.1f} s", flush=True)

    base = statistics.median(seconds["hnsw"])
    print(f"\n{'variant':16} {'seconds':>12} {'ms/row':>10} {'vs hnsw':>8} {'recall@10':>9}")
    for variant in variants:
        per_row = [1000 * s / args.rows for s in seconds[variant]]
        ratio = [s / base for s in seconds[variant]]
        recall = f"{recalls[variant]:.3f}" if variant in recalls else "exact"
        print(
            f"{variant:16} {span(seconds[variant], '{:.1f}'):>12} "
            f"{span(per_row, '{:.2f}'):>10} {span(ratio, '{:.2f}'):>8} {recall:>9}"
        )


if __name__ == "__main__":
    main()
