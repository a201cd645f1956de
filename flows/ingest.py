"""The ``tidal`` flow: scan the source, then ingest every file under bounded concurrency.

Run it ad hoc with ``python flows/ingest.py`` (no configuration needed: it ingests the bundled
sample corpus into the embedded Postgres), or as the ``tidal/ingest`` deployment.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

# Prefect reads these when it is imported; quiet the ephemeral API server before that.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tidal")

from prefect import flow, get_run_logger  # noqa: E402
from prefect.futures import PrefectFuture, as_completed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402
from prefect.utilities.annotations import unmapped  # noqa: E402

from tasks import configured_ingest_task, result_storage  # noqa: E402
from tasks.artifacts import Progress, publish  # noqa: E402
from tidal.errors import TidalError, error_kind  # noqa: E402
from tidal.pipeline import Pipeline, build_pipeline  # noqa: E402
from tidal.records import FileResult, RunSummary, SourceFile  # noqa: E402
from tidal.report import summary_frame, write_csv  # noqa: E402
from tidal.settings import EmbedderName, Settings, load_settings  # noqa: E402
from tidal.sync import (  # noqa: E402
    PRICE_PER_MILLION_TOKENS,
    Changes,
    Deletion,
    Plan,
    make_plan,
    plan_deletions,
    split_by_state,
)


class IngestFailed(Exception):
    """Some files failed; every other file was still processed. Carries the full summary."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary
        failed = [r.path for r in summary.failed]
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        names = ", ".join(failed[:10]) + more
        super().__init__(f"{len(failed)} of {len(summary.results)} files failed: {names}")

    def __reduce__(self):
        return (type(self), (self.summary,))


@flow(name="tidal", log_prints=False)
def tidal(
    source: str | None = None,
    embedder: EmbedderName | None = None,
    embedding_model: str | None = None,
    concurrency: int | None = None,
    chunk_tokens: int | None = None,
    chunk_overlap: int | None = None,
    paths: list[str] | None = None,
    dry_run: bool = False,
    force_delete: bool | None = None,
) -> RunSummary | Plan:
    """Bring the vector index up to date with the source.

    Parameters override the matching ``TIDAL_*`` variables. Secrets (database and Redis URLs,
    keys) come only from the environment, so they never show up among a run's parameters.
    ``paths`` re-runs just those files (``tidal retry``) and deletes nothing; ``dry_run``
    returns the Plan of what would happen, embedding and writing nothing.

    Files that failed last time go first. Files gone from a complete listing are deleted at the
    end, within TIDAL_MAX_DELETE_SHARE unless ``force_delete``. Ends Completed when every file is
    ingested or unchanged; ends Failed, after every other file has been processed, when any file
    failed, naming them.
    """
    started = time.perf_counter()
    settings = load_settings(
        source=source,
        embedder=embedder,
        embedding_model=embedding_model,
        concurrency=concurrency,
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        force_delete=force_delete,
    )
    logger = get_run_logger()
    logger.info("Tidal settings: %s", settings.describe())
    with build_pipeline(settings) as pipeline:
        files = list(pipeline.source.list())  # a listing error raises here: nothing is deleted
        logger.info("found %d files in %s", len(files), pipeline.source.uri)
        stored = pipeline.store.stored_paths()
        deletion = Deletion()
        if paths:
            files = _only(files, paths)
        else:
            deletion = plan_deletions(
                [f.path for f in files],
                stored,
                covers=pipeline.source.covers,
                max_share=settings.max_delete_share,
                force=settings.force_delete,
            )
        changes = split_by_state(files, pipeline.store.current_files(pipeline.fingerprint), stored)
        if dry_run:
            plan = make_plan(
                pipeline, changes, deletion=deletion, price_per_million=_price(settings)
            )
            for line in plan.render().splitlines():
                logger.info(line)
            return plan
        results = _ingest_all(changes, pipeline, settings, result_storage(settings))
        if deletion.refused:
            logger.warning("not deleting %d file(s): %s", len(deletion.paths), deletion.refused)
        elif deletion.paths:
            chunks = pipeline.store.delete_files(deletion.paths)
            logger.info(
                "deleted %d file(s) gone from the source (%d chunks)", len(deletion.paths), chunks
            )
    summary = RunSummary(
        tuple(sorted(results, key=lambda r: r.path)),
        seconds=time.perf_counter() - started,
        source=settings.source,
        deleted=deletion.allowed,
        deletion_refused=deletion.refused,
    )
    report = write_csv(summary, settings.data_dir / "reports")
    publish(summary)
    for line in summary.render().splitlines():
        logger.info(line)
    logger.info("per-file report: %s", report)
    if summary.failed:
        raise IngestFailed(summary)
    return summary


def _ingest_all(
    changes: Changes, pipeline: Pipeline, settings: Settings, storage: object
) -> list[FileResult]:
    """Map the ingest task over ``files``; log each as it finishes, as the Bull worker did.

    Files the store already holds at this version may take their cached task result; all
    others refresh the cache, so an emptied or rebuilt database is never mistaken for done.
    """
    logger = get_run_logger()
    failed_before = {f.path for f in pipeline.store.failed_files()}
    changed = sorted(
        [*changes.added, *changes.changed], key=lambda f: (f.path not in failed_before, f.path)
    )
    unchanged = changes.unchanged
    futures: dict[PrefectFuture[FileResult], SourceFile] = {}
    with ThreadPoolTaskRunner(max_workers=settings.concurrency) as runner:
        for group, refresh in ((changed, True), (unchanged, False)):
            if group:
                task = configured_ingest_task(settings, storage, refresh_cache=refresh)
                mapped = runner.map(task, {"file": group, "pipeline": unmapped(pipeline)})
                futures.update(zip(mapped, group, strict=True))
        progress = Progress(changes.total)
        results = []
        for done, future in enumerate(as_completed(list(futures)), start=1):
            result = _outcome(future, futures[future], pipeline)
            results.append(result)
            logger.info("[%d/%d] %s: %s", done, changes.total, result.path, _describe(result))
            progress.update(done)
    return results


def _only(files: Sequence[SourceFile], paths: Sequence[str]) -> list[SourceFile]:
    """The listed files among ``paths``; a path the source does not list is reported."""
    wanted = set(paths)
    chosen = [f for f in files if f.path in wanted]
    for missing in sorted(wanted - {f.path for f in chosen}):
        get_run_logger().warning("%s: not in the source listing, nothing to retry", missing)
    return chosen


def _price(settings: Settings) -> float | None:
    if settings.embedder != "openai":
        return None
    return PRICE_PER_MILLION_TOKENS.get(settings.effective_model)


def _outcome(future: PrefectFuture[FileResult], file: SourceFile, pipeline: Pipeline) -> FileResult:
    """The file's result; a failure is recorded in the store with its reason."""
    future.wait()  # sets the final state; before that ``state`` may be a stale read from the API
    state = future.state
    if state.is_completed():
        result: FileResult = future.result()
        if state.name == "Cached":
            return FileResult(file.path, "skipped")
        return result
    exc = future.result(raise_on_failure=False)
    if isinstance(exc, TidalError):
        message, attempts = exc.message, exc.attempts or 1
    elif isinstance(exc, BaseException):
        message, attempts = f"{type(exc).__name__}: {exc}", 1
    else:
        message, attempts = f"task ended {state.name}: {state.message}", 1
    kind = error_kind(exc) if isinstance(exc, BaseException) else "permanent"
    pipeline.store.record_failure(
        file.path,
        file.content_hash,
        fingerprint=pipeline.fingerprint,
        error=message,
        kind=kind,
        attempts=attempts,
    )
    return FileResult(file.path, "failed", attempts=attempts, error=message, error_kind=kind)


def _describe(result: FileResult) -> str:
    if result.status == "ingested":
        reused = f" ({result.reused} reused)" if result.reused else ""
        retried = f", {result.attempts} attempts" if result.attempts > 1 else ""
        return f"{result.chunks} chunks{reused}, {result.tokens} tokens{retried}"
    if result.status == "skipped":
        return "unchanged, skipped"
    return f"FAILED ({result.error_kind}, {result.attempts} attempt(s)): {result.error}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python flows/ingest.py [--dry-run] [--force-delete] [PATH...]``.

    Validates the settings before Prefect starts, runs the flow, prints the summary (or the plan).
    Exit status: 0 all done, 1 some files failed, 2 the run itself could not go on.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python flows/ingest.py", description=main.__doc__)
    parser.add_argument("paths", nargs="*", help="only these files (as listed by the source)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    parser.add_argument(
        "--force-delete", action="store_true", help="delete past TIDAL_MAX_DELETE_SHARE"
    )
    args = parser.parse_args(argv)
    try:
        load_settings()
    except TidalError as exc:
        print(f"tidal: {exc}", file=sys.stderr)
        return 2
    state = tidal(
        paths=args.paths or None,
        dry_run=args.dry_run,
        force_delete=args.force_delete or None,
        return_state=True,
    )
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException) and not isinstance(outcome, IngestFailed):
        print(f"tidal: the run failed: {outcome}", file=sys.stderr)
        return 2
    if isinstance(outcome, Plan):
        print(outcome.render())
        return 0
    summary = outcome.summary if isinstance(outcome, IngestFailed) else outcome
    if summary.results:
        print(summary_frame(summary).to_string(index=False, max_colwidth=60))
    print(summary.render())
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
