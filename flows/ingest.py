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
from tidal.errors import TidalError, error_kind  # noqa: E402
from tidal.pipeline import Pipeline, build_pipeline  # noqa: E402
from tidal.records import FileResult, RunSummary, SourceFile  # noqa: E402
from tidal.settings import EmbedderName, Settings, load_settings  # noqa: E402


class IngestFailed(Exception):
    """Some files failed; every other file was still processed. Carries the full summary."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary
        names = ", ".join(r.path for r in summary.failed)
        super().__init__(f"{len(summary.failed)} of {len(summary.results)} files failed: {names}")

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
) -> RunSummary:
    """Bring the vector index up to date with the source.

    Parameters override the matching ``TIDAL_*`` variables. Secrets (database and Redis URLs)
    come only from the environment, so they never show up among a run's parameters.

    Ends Completed when every file is ingested or unchanged; ends Failed, after every other file
    has been processed, when any file failed, naming them.
    """
    started = time.perf_counter()
    settings = load_settings(
        source=source,
        embedder=embedder,
        embedding_model=embedding_model,
        concurrency=concurrency,
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
    )
    logger = get_run_logger()
    logger.info("Tidal settings: %s", settings.describe())
    storage = result_storage(settings)
    with build_pipeline(settings) as pipeline:
        files = list(pipeline.source.list())
        logger.info("found %d files in %s", len(files), pipeline.source.uri)
        results = _ingest_all(files, pipeline, settings, storage)
    summary = RunSummary(
        tuple(sorted(results, key=lambda r: r.path)),
        seconds=time.perf_counter() - started,
        source=settings.source,
    )
    for line in summary.render().splitlines():
        logger.info(line)
    if summary.failed:
        raise IngestFailed(summary)
    return summary


def _ingest_all(
    files: Sequence[SourceFile], pipeline: Pipeline, settings: Settings, storage: object
) -> list[FileResult]:
    """Map the ingest task over ``files``; log each as it finishes, as the Bull worker did.

    Files the store already holds at this version may take their cached task result; all
    others refresh the cache, so an emptied or rebuilt database is never mistaken for done.
    """
    logger = get_run_logger()
    current = pipeline.store.current_files(pipeline.fingerprint)
    unchanged = [f for f in files if current.get(f.path) == f.content_hash]
    changed = [f for f in files if current.get(f.path) != f.content_hash]
    futures: dict[PrefectFuture[FileResult], SourceFile] = {}
    with ThreadPoolTaskRunner(max_workers=settings.concurrency) as runner:
        for group, refresh in ((unchanged, False), (changed, True)):
            if group:
                task = configured_ingest_task(settings, storage, refresh_cache=refresh)
                mapped = runner.map(task, {"file": group, "pipeline": unmapped(pipeline)})
                futures.update(zip(mapped, group, strict=True))
        results = []
        for done, future in enumerate(as_completed(list(futures)), start=1):
            result = _outcome(future, futures[future], pipeline)
            results.append(result)
            logger.info("[%d/%d] %s: %s", done, len(files), result.path, _describe(result))
    return results


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
        retried = f", {result.attempts} attempts" if result.attempts > 1 else ""
        return f"{result.chunks} chunks, {result.tokens} tokens{retried}"
    if result.status == "skipped":
        return "unchanged, skipped"
    return f"FAILED ({result.error_kind}, {result.attempts} attempt(s)): {result.error}"


def main() -> int:
    """``python flows/ingest.py``: validate settings first, run the flow, print the summary."""
    try:
        load_settings()
    except TidalError as exc:
        print(f"tidal: {exc}", file=sys.stderr)
        return 2
    state = tidal(return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, IngestFailed):
        print(outcome.summary.render())
        return 1
    if isinstance(outcome, BaseException):
        print(f"tidal: the run failed: {outcome}", file=sys.stderr)
        return 2
    print(outcome.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
