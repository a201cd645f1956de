"""``tidal``: run an ingest, search the index, and look after it, from a terminal.

Only ``ingest`` and ``retry`` load Prefect; the other commands read the index and answer in
about a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flows.search import MODES, Filters, print_hits, search
from tidal import store
from tidal.errors import TidalError
from tidal.settings import Settings, load_settings
from tidal.store import FailedFile

if TYPE_CHECKING:  # the ingest's modules (and tiktoken) load only for what plans or runs
    from tidal.run import Plan


def _failed(settings: Settings) -> list[FailedFile]:
    """Failed files, read from the file table alone (no model is loaded)."""
    return store.failed_files(settings)


def _status(settings: Settings) -> int:
    """``tidal status``, read from the index's run ledger: answers in about a second, with or
    without a Prefect server, and a dry run is never mistaken for a sync (it is not recorded)."""
    import os
    from datetime import UTC, datetime

    from flows import server as local_server

    status = store.index_status(settings)
    if status is None:
        print("no index yet: `python flows/ingest.py` makes it")
        return 1
    api = os.environ.get("PREFECT_API_URL")
    ui = os.environ.get("PREFECT_UI_URL") or (
        api.removesuffix("/").removesuffix("/api") if api else None
    )
    if ui is None and settings.prefect_server == "background":  # where ad hoc runs report
        local = local_server.running(settings.data_dir)
        ui = local.ui_url if local else None
    print(status.render(now=datetime.now(UTC), prefect_ui=ui))
    return 0 if status.last_run else 1


def _print_failed(failed: Sequence[FailedFile]) -> int:
    if not failed:
        print("no failed files")
        return 0
    for f in failed:
        when = f.updated_at.strftime("%Y-%m-%d %H:%M:%S %Z")
        print(f"{f.path}  [{f.error_kind}, {f.attempts} attempt(s), {when}]")
        print(f"    {f.error}")
    print(f"{len(failed)} failed file(s); `tidal retry` runs them again")
    return 1


def _db(settings: Settings, action: str, dimension: int | None) -> int:
    """``tidal db sql`` prints the schema; ``tidal db init`` applies it (idempotent)."""
    if dimension is None:
        from tidal.embedders import open_embedder

        dimension = open_embedder(settings).dimension
    if action == "sql":
        print(store.schema_sql(dimension), end="")
        return 0
    index = store.open_store(settings, dimension=dimension, pool_size=1)
    try:
        index.build_vector_index()
    finally:
        index.close()
    where = settings.describe()["database"]
    print(
        f"schema ready in {where}: documents (vector({dimension})), ingested_files,"
        " match_documents, hybrid_search"
    )
    return 0


def _server(settings: Settings, action: str) -> int:
    """``tidal server [status|stop]``: reads the server's record, imports no Prefect."""
    from flows import server as local_server

    if action == "stop":
        stopped = local_server.stop(settings.data_dir)
        print(f"stopped the local Prefect server (pid {stopped.pid})" if stopped else "none ran")
        return 0
    running = local_server.running(settings.data_dir)
    if running is None:
        print("no local Prefect server: the next run with work starts one")
        return 1
    print(
        f"local Prefect server: UI {running.ui_url}, pid {running.pid}, Prefect {running.prefect}"
    )
    return 0


def plan(settings: Settings) -> Plan:
    """The next run's plan, from the same prepared run the flow drives; no Prefect involved."""
    from tidal.runtime import prepare_run

    return prepare_run(settings).plan()


def ingest(argv: Sequence[str] = ()) -> int:
    """``tidal ingest ARGS``: what ``python flows/ingest.py ARGS`` runs."""
    return main(["ingest", *argv])


def _add_ingest_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", help="only these files (as listed by the source)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    parser.add_argument(
        "--force-delete", action="store_true", help="delete past TIDAL_MAX_DELETE_SHARE"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="list unchanged files in the table too"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tidal", description="Tidal: a bucket of docs → a pgvector index."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    find = commands.add_parser("search", help="print the chunks nearest to a question")
    find.add_argument("query")
    find.add_argument("-k", "--limit", type=int, default=5, help="how many chunks (default 5)")
    find.add_argument("--type", choices=["design", "prd"], help="only designs or only PRDs")
    find.add_argument("--team", help="only this team's designs (designs/TEAM/...)")
    find.add_argument("--path", help="only files whose path starts with this (e.g. prds/)")
    find.add_argument(
        "--mode",
        choices=MODES,
        default="hybrid",
        help="hybrid: full text and vectors fused (default); vector or text: either alone",
    )
    _add_ingest_options(
        commands.add_parser(
            "ingest",
            help="run the tidal flow once (python flows/ingest.py)",
            description="Run once: exit 0 all done, 1 some files failed, 2 the run could not "
            "go on, 3 files gone from the source were kept by the deletion guard, 130 "
            "interrupted.",
        )
    )
    commands.add_parser(
        "plan", help="what the next run would do; embeds and writes nothing (no Prefect)"
    )
    commands.add_parser("failed", help="the files whose last attempt failed, with the reason")
    commands.add_parser(
        "status", help="what the index holds and how its last run went (no Prefect, no model)"
    )
    retry = commands.add_parser("retry", help="run the flow for these files only")
    retry.add_argument("paths", nargs="*", help="paths to retry (default: every failed file)")
    retry.add_argument("-v", "--verbose", action="store_true", help="list unchanged files too")
    server = commands.add_parser(
        "server", help="the local Prefect server ad hoc runs keep running (flows/server.py)"
    )
    server.add_argument("action", choices=["status", "stop"], nargs="?", default="status")
    db = commands.add_parser("db", help="create or print the database schema")
    db.add_argument("action", choices=["init", "sql"], help="init: apply it; sql: print it")
    db.add_argument(
        "--dimension", type=int, help="vector size (default: the configured embedder's)"
    )
    args = parser.parse_args(argv)

    try:
        if args.command == "ingest":
            from flows.adhoc import ingest as run_once  # Prefect loads only for these two

            return run_once(
                args.paths,
                dry_run=args.dry_run,
                force_delete=args.force_delete,
                verbose=args.verbose,
            )
        if args.command == "retry":
            paths = args.paths or [f.path for f in _failed(load_settings())]
            if not paths:
                print("no failed files to retry")
                return 0
            from flows.adhoc import ingest as run_once

            return run_once(paths, verbose=args.verbose)
        settings = load_settings()
        if args.command == "status":
            return _status(settings)
        if args.command == "plan":
            print(plan(settings).render())
            return 0
        if args.command == "failed":
            return _print_failed(_failed(settings))
        if args.command == "db":
            return _db(settings, args.action, args.dimension)
        if args.command == "server":
            return _server(settings, args.action)
        hits = search(
            settings,
            args.query,
            limit=args.limit,
            kind=args.type,
            team=args.team,
            path=args.path,
            mode=args.mode,
        )
        print_hits(hits, settings, Filters(args.type, args.team, args.path), args.mode)
    except TidalError as exc:
        print(f"tidal: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
