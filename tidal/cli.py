"""``tidal``: search the index, or run an ingest, from a terminal."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from tidal.errors import TidalError
from tidal.records import file_kind
from tidal.settings import Settings, load_settings
from tidal.store import SearchHit


def search(
    settings: Settings, query: str, *, limit: int = 5, kind: str | None = None
) -> list[SearchHit]:
    """The ``limit`` chunks nearest to ``query``, optionally only from designs or PRDs."""
    from tidal.embedders import open_embedder
    from tidal.store.embedded import embedded_database_url
    from tidal.store.postgres import PostgresStore

    embedder = open_embedder(settings.embedder, settings.effective_model)
    url = (
        settings.database_url.get_secret_value()
        if settings.database_url
        else embedded_database_url(settings.data_dir)
    )
    store = PostgresStore(url, dimension=embedder.dimension, pool_size=1)
    try:
        [vector] = embedder.embed([query])
        return store.search(vector, limit=limit, filter={"type": kind} if kind else None)
    finally:
        store.close()


def _print_hits(hits: Sequence[SearchHit]) -> None:
    if not hits:
        print("no results: is the index empty? run `python flows/ingest.py` first")
        return
    for rank, hit in enumerate(hits, start=1):
        snippet = " ".join(hit.content.split())
        where = f"chunk {hit.chunk_index}, {file_kind(hit.source_path)}"
        print(f"{rank}. {hit.score:.3f}  {hit.source_path}  ({where})")
        print(textwrap.indent(textwrap.shorten(snippet, width=300, placeholder=" …"), "     "))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidal", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    find = commands.add_parser("search", help="print the chunks nearest to a question")
    find.add_argument("query")
    find.add_argument("-k", "--limit", type=int, default=5, help="how many chunks (default 5)")
    find.add_argument("--type", choices=["design", "prd"], help="only designs or only PRDs")
    commands.add_parser("ingest", help="run the tidal flow once (same as python flows/ingest.py)")
    args = parser.parse_args(argv)

    try:
        if args.command == "ingest":
            from flows.ingest import main as ingest_main  # Prefect loads only for this command

            return ingest_main()
        _print_hits(search(load_settings(), args.query, limit=args.limit, kind=args.type))
    except TidalError as exc:
        print(f"tidal: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
