"""The ``tidal`` flow: scan the source, then ingest every file under bounded concurrency.

Run it ad hoc with ``python flows/ingest.py`` (the same command as ``tidal ingest``; with no
configuration it ingests the bundled sample corpus into the embedded Postgres), or as the
``tidal/ingest`` deployment.
"""

# No ``from __future__ import annotations`` here: Prefect builds the flow's parameter model from
# these annotations in whatever process runs it (a served deployment's included), and a string
# annotation there cannot always be resolved ("`TidalModel` is not fully defined").
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

import flows.environment  # noqa: F401 - Prefect reads these defaults once, when imported

# isort: split
from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Failed, State

from tasks import configured_ingest_task, result_storage, slots, task_runner
from tasks.artifacts import Progress, label_run, publish
from tasks.runners import forget_linked_results
from tidal.errors import TidalError
from tidal.records import FileResult, RunSummary, shown
from tidal.report import describe_result, load_pandas_in_background, write_csv
from tidal.run import IngestRun, Outcome, Plan, RunEnded, drive, raise_for_outcome
from tidal.runtime import PipelineSpec, prepare_run
from tidal.settings import EmbedderName, Settings, TaskRunnerName, load_settings
from tidal.store import record_stopped_start


class _ExpectedEnds(logging.Filter):
    """Keep the traceback out of a log line about an expected end of a run (a ``RunEnded``, a
    ``TidalError``): its message says it all. The flow returns such an end as its Failed state,
    but Prefect's engine, in a deployment's process, raises that state's exception again as it
    exits and logs it with its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TidalError | RunEnded):
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("prefect.flow_runs").addFilter(_ExpectedEnds())

prepared: ContextVar[tuple[PipelineSpec, IngestRun] | None] = ContextVar(
    "tidal_prepared_run", default=None
)
"""A run the caller in this process already prepared, with the spec of its settings (the ad hoc
run, ``flows.adhoc``): the flow drives it rather than list the source a second time."""


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
    task_runner_name: TaskRunnerName | None = None,
) -> RunSummary | Plan | State:
    """Bring the vector index up to date with the source.

    Parameters override the matching ``TIDAL_*`` variables (``task_runner_name`` is
    ``TIDAL_TASK_RUNNER``). Secrets (database and Redis URLs, keys) come only from the
    environment, so they never show up among a run's parameters. ``paths`` re-runs just those
    files (``tidal retry``) and deletes nothing; ``dry_run`` returns the Plan of what would
    happen, embedding and writing nothing.

    The decisions are ``tidal.run.IngestRun``'s; this flow maps the task over the files that
    need work (unchanged files are counted, not run), publishes artifacts, and ends Completed,
    Failed naming the failed files (after every other file was processed), or Failed at the
    first fatal error (a refused key, a wrong vector width) with its cause and fix.
    """
    try:
        settings = load_settings(
            source=source,
            embedder=embedder,
            embedding_model=embedding_model,
            concurrency=concurrency,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            force_delete=force_delete,
            task_runner=task_runner_name,
            origin={"task_runner": "parameter task_runner_name"},
        )
        return _sync(settings, paths, dry_run=dry_run)
    except (TidalError, RunEnded) as exc:
        # An expected end, said in full by its message. Raised, it would also be logged with a
        # traceback by Prefect; returned as the Failed state, the message is the whole story.
        return Failed(message=str(exc), data=exc)


def _sync(settings: Settings, paths: list[str] | None, *, dry_run: bool) -> RunSummary | Plan:
    """The flow's work, for validated settings; a run that did not complete raises RunEnded."""
    logger = get_run_logger()
    logger.info("Tidal settings: %s", settings.describe())
    run = _take_prepared(settings, paths) or _prepare(settings, paths, dry_run=dry_run)
    run.flow_run = (str(current_flow_run.id), current_flow_run.name)
    work = run.work
    logger.info(
        "found %d files in %s: %d to ingest, %d unchanged",
        work.total,
        run.pipeline.source.uri,
        len(work.todo),
        len(work.changes.unchanged),
    )
    label_run(files=work.total, settled=run.counts(), dry_run=dry_run)
    if dry_run:
        plan = run.plan()
        for line in plan.render().splitlines():
            logger.info(line)
        return plan
    progress = Progress(work.total, done=run.done)

    def settled(result: FileResult) -> None:
        logger.info(
            "[%d/%d] %s: %s", run.done, work.total, shown(result.path), describe_result(result)
        )
        progress.update(run.done)
        forget_linked_results()

    if work.todo:
        if settings.embedder != "local":
            load_pandas_in_background()  # for the report, while the files wait on the network
        task = configured_ingest_task(settings, result_storage(settings))
        spec = PipelineSpec.of(settings).pinned(run.pipeline.fingerprint)
        with task_runner(settings) as runner:
            drive(
                run,
                lambda file: runner.submit(task, {"file": file, "spec": spec}),
                _outcome,
                window=slots(settings),
                on_settled=settled,
            )
    progress.update(work.total)
    summary, report = finish(run, settings)
    publish(summary, report)
    for line in summary.render().splitlines():
        logger.info(line)
    logger.info("per-file report: %s", report)
    return raise_for_outcome(summary)


def finish(run: IngestRun, settings: Settings) -> tuple[RunSummary, Path]:
    """End the run (deletions, the ledger) and write its per-file CSV report: how every run
    ends, in a flow or not."""
    summary = run.finish()
    return summary, write_csv(summary, settings.data_dir / "reports")


def _take_prepared(settings: Settings, paths: list[str] | None) -> IngestRun | None:
    """The caller's prepared run, when it was prepared for these very settings and paths."""
    handed = prepared.get()
    if handed is None:
        return None
    spec, run = handed
    same = spec == PipelineSpec.of(settings) and run.paths == (tuple(paths) if paths else None)
    return run if same else None


def _prepare(settings: Settings, paths: list[str] | None, *, dry_run: bool) -> IngestRun:
    """List the source and sort the files; a failure before the first file still goes in the
    index's run ledger (a dry run records nothing)."""
    started_at = datetime.now(UTC)
    try:
        return prepare_run(settings, paths=paths)
    except TidalError as exc:
        if not dry_run:
            record_stopped_start(settings, str(exc), started_at=started_at)
        raise


def _outcome(future: PrefectFuture[FileResult]) -> Outcome:
    """The task's FileResult or exception; an error of the orchestrator itself (a lost Dask
    worker, an API hiccup) is returned as is, for ``IngestRun.settle`` to tell apart."""
    try:
        result = future.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - handed to settle, which decides
        return exc
    if isinstance(result, FileResult | BaseException):
        return result
    return RuntimeError(f"the task run ended {future.state.name} without a result")


if __name__ == "__main__":
    from flows.cli import ingest

    sys.exit(ingest(sys.argv[1:]))
