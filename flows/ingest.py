"""The ``tidal`` flow: scan the source, then ingest every file under bounded concurrency.

Run it ad hoc with ``python flows/ingest.py`` (no configuration needed: it ingests the bundled
sample corpus into the embedded Postgres), or as the ``tidal/ingest`` deployment.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

# Prefect reads these when it is imported; quiet the ephemeral API server before that.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tidal")
# tidal's loggers also log before the flow run starts (the embedded Postgres starting, the
# model loading): those lines go to the console, and the API handler need not warn about them.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from prefect import flow, get_client, get_run_logger  # noqa: E402
from prefect.futures import PrefectFuture  # noqa: E402
from prefect.runtime import flow_run as current_flow_run  # noqa: E402
from prefect.settings import (  # noqa: E402
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)
from prefect.settings.legacy import Setting  # noqa: E402 - the type of the PREFECT_* above

from flows import server as local_server  # noqa: E402
from flows.server import LocalServer  # noqa: E402
from tasks import configured_ingest_task, result_storage, slots, task_runner  # noqa: E402
from tasks.artifacts import Progress, label_run, publish  # noqa: E402
from tidal.embedders import Embedder  # noqa: E402
from tidal.embedders.local import LocalEmbedder  # noqa: E402
from tidal.embedders.openai import OpenAIEmbedder  # noqa: E402
from tidal.errors import TidalError  # noqa: E402
from tidal.records import FileResult, RunSummary, outcome_of, shown  # noqa: E402
from tidal.report import load_pandas_in_background, summary_frame, write_csv  # noqa: E402
from tidal.run import (  # noqa: E402
    DeletionRefused,
    IngestFailed,
    IngestRun,
    Outcome,
    RunStopped,
    drive,
    raise_for_outcome,
)
from tidal.runtime import PipelineSpec, preflight, shared_pipeline  # noqa: E402
from tidal.settings import EmbedderName, Settings, TaskRunnerName, load_settings  # noqa: E402
from tidal.store import record_stopped_start  # noqa: E402
from tidal.sync import Plan  # noqa: E402

__all__ = ["DeletionRefused", "IngestFailed", "RunStopped", "main", "tidal"]
_ENDED_WITH_A_SUMMARY = (IngestFailed, RunStopped, DeletionRefused)
_EXIT = {
    "completed": (0, None),
    "failed": (1, None),  # the table and the summary above name the files
    "stopped": (2, "the run stopped"),
    "deletion refused": (3, "deletion refused"),
}
"""main's exit status for each way a run ends (``outcome_of``), and what it adds on stderr."""


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
) -> RunSummary | Plan:
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
    logger = get_run_logger()
    logger.info("Tidal settings: %s", settings.describe())
    spec = PipelineSpec.of(settings)
    run = _prepared.pop((spec, tuple(paths or ())), None)
    if run is None:
        started_at = datetime.now(UTC)
        try:
            run = IngestRun.configured(shared_pipeline(spec), settings, paths=paths)
            run.prepare()
        except TidalError as exc:  # before the first file: the ledger still gets the run
            if not dry_run:
                record_stopped_start(settings, str(exc), started_at=started_at)
            raise
    pipeline = run.pipeline
    run.flow_run = (str(current_flow_run.id), current_flow_run.name)
    work = run.work
    logger.info(
        "found %d files in %s: %d to ingest, %d unchanged",
        work.total,
        pipeline.source.uri,
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
        logger.info("[%d/%d] %s: %s", run.done, work.total, shown(result.path), _describe(result))
        progress.update(run.done)

    if work.todo:
        if settings.embedder != "local":
            load_pandas_in_background()  # for the report, while the files wait on the network
        task = configured_ingest_task(settings, result_storage(settings))
        pinned = spec.pinned(pipeline.fingerprint)
        with task_runner(settings) as runner:
            drive(
                run,
                lambda file: runner.submit(task, {"file": file, "spec": pinned}),
                _outcome,
                window=slots(settings),
                on_settled=settled,
            )
    progress.update(work.total)
    summary = run.finish()
    report = write_csv(summary, settings.data_dir / "reports")
    publish(summary)
    for line in summary.render().splitlines():
        logger.info(line)
    logger.info("per-file report: %s", report)
    return raise_for_outcome(summary)


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


def _describe(result: FileResult) -> str:
    if result.status == "ingested":
        reused = f" ({result.reused} reused)" if result.reused else ""
        retried = f", {result.attempts} attempts" if result.attempts > 1 else ""
        return f"{result.chunks} chunks{reused}, {result.tokens} tokens{retried}"
    if result.status == "skipped":
        return "unchanged, skipped"
    if result.status == "stopped":
        return f"not processed: {result.error}"
    if result.status == "ignored":
        return f"ignored: {result.error}"
    tries = f", {result.attempts} attempt(s)" if result.attempts else ""
    return f"FAILED ({result.error_kind}{tries}): {result.error}"


def _warm_up(embedder: Embedder, settings: Settings, *, check: bool) -> None:
    """Load a local model and, with ``check``, check the embedder (one request) while the
    Prefect server is found or started and the flow run is created.

    ``embedder`` is the one ``_prepare`` opened in this process's pipeline cache, which the flow
    asks again: it waits for this load instead of starting its own, and its own check finds this
    one passed (``OpenAIEmbedder.check``). ``check`` only when the run is known to have files to
    embed: an unchanged run sends no request. A failure here is left for the flow to meet again
    and report as the run's error.
    """
    if check and isinstance(embedder, OpenAIEmbedder):
        # The SDK's import (~0.4 s of CPU) on this thread, before the flow run's creation
        # starts: on the warm-up thread it would compete with it for the GIL, and the check
        # would come back after the flow had started waiting for it.
        embedder.connect()

    def warm() -> None:
        try:
            # Dask's workers embed, not this process.
            if isinstance(embedder, LocalEmbedder) and settings.task_runner == "threads":
                embedder.load()  # ~4 s of torch and weights, while the flow run is set up
            if check:
                embedder.check()
        except Exception:  # noqa: BLE001 - the flow raises it again, with its context
            return

    threading.Thread(target=warm, name="tidal-warm-up", daemon=True).start()


_prepared: dict[tuple[PipelineSpec, tuple[str, ...]], IngestRun] = {}
"""A run ``main`` prepared and found work in, for the flow it then starts in this process to take
over rather than list the source and read the file table a second time."""


def _prepare(settings: Settings, paths: list[str] | None) -> IngestRun:
    """List the source and read the file table here, before Prefect's part of the run starts.

    Whether the run has work decides what comes next: no Prefect flow run at all when nothing
    is configured and nothing needs ingesting, the model's load and the embedder's check only
    when something does. The flow this process then starts takes this run over (``_prepared``)
    instead of listing a second time.
    """
    spec = PipelineSpec.of(settings)
    run = IngestRun.configured(shared_pipeline(spec), settings, paths=paths)
    run.prepare()
    _prepared[(spec, tuple(paths or ()))] = run
    return run


def _without_a_flow(
    run: IngestRun, settings: Settings, *, dry_run: bool
) -> RunSummary | Plan | None:
    """The prepared run, finished in this process without Prefect, when it has no file to
    ingest; None when it has (the flow then runs it).

    A temporary Prefect server costs 6-20 s to start and stop, all of an unchanged daily run
    (which lists the source and reads the file table in under a second). A run with nothing to
    ingest (unchanged files, deletions, the still-broken) and a dry run start no task, so they
    need no flow either: they are decided, finished and written to the index's run ledger here,
    as the flow would. With a Prefect server configured every run is a flow run, so the UI
    shows them all.
    """
    if run.work.todo and not dry_run:
        return None
    if dry_run:
        return run.plan()
    summary = run.finish()
    write_csv(summary, settings.data_dir / "reports")
    return summary


def _local_server(settings: Settings) -> LocalServer | None:
    """The local server this run reports to (``flows/server.py``), found running or started now;
    None when TIDAL_PREFECT_SERVER=temporary leaves it to Prefect's temporary one."""
    if settings.prefect_server == "temporary":
        return None
    server = local_server.running(settings.data_dir)
    if server is None:
        print("tidal: starting a local Prefect server, kept running for the next run ...")
        server = local_server.ensure(settings.data_dir)
    print(f"tidal: Prefect UI at {server.ui_url} (`tidal server stop` stops it)")
    return server


_FINAL = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]


def _summary_of(outcome: object) -> RunSummary | None:
    """The run's summary, whether it ended clean or Failed with one; None for a plan or a run
    that ended without one (an error of the flow itself)."""
    summary = outcome.summary if isinstance(outcome, _ENDED_WITH_A_SUMMARY) else outcome
    return summary if isinstance(summary, RunSummary) else None


def _ad_hoc_settings(server: LocalServer | None) -> dict[Setting, object]:
    """Prefect settings for the flow run this process starts itself.

    * the local server's API, when Tidal reports to its own (``flows/server.py``);
    * no flow-run heartbeats, unless ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is set. They exist
      for deployments' runs, where an automation the user creates marks a run that stops
      beating as Crashed; a process run by hand has none watching, and Prefect 3.9 joins the
      heartbeat thread at the end of every flow run while it sleeps out its current second
      (0-1 s, half a second on average, of every ad hoc run).
    """
    updates: dict[Setting, object] = {}
    if server is not None:
        updates[PREFECT_API_URL] = server.api_url
    if "heartbeat_frequency" not in get_current_settings().flows.model_fields_set:
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    return updates


def _let_the_server_record(
    flow_run_id: UUID | None, summary: RunSummary | None, timeout: float = 15
) -> None:
    """Wait until the temporary Prefect server has recorded this flow's task runs as finished.

    The server records task runs from the events the flow sends, one database write per event,
    and on a loaded machine it lags seconds behind the flow. At exit the flow process stops the
    server (SIGTERM) even if it is still writing, which cancels the write: the server then logs
    ``ERROR | prefect.server.services.task_run_recorder - Error flushing 1 events`` and a
    CancelledError traceback after the run ``Finished in state Completed()``, and the UI loses
    that task run's last state. Waiting here costs one request when it has caught up; a server
    that is still behind after ``timeout`` is left as it is, noise and all.
    """
    # One task run per file the flow tried: a file settled without one has 0 attempts.
    task_runs = sum(1 for r in summary.results if r.attempts > 0) if summary else 0
    if flow_run_id is None or not task_runs:
        return
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout)  # the flow's last events, sent to the server
    query = {
        "flow_runs": {"id": {"any_": [str(flow_run_id)]}},
        "task_runs": {"state": {"type": {"any_": _FINAL}}},
    }
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            recorded = client.request("POST", "/task_runs/count", json=query).json()
            if recorded >= task_runs:
                return
            time.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    """python flows/ingest.py [--dry-run] [--force-delete] [--verbose] [PATH...]

    Validates the settings before Prefect starts, runs the flow, prints the summary (or the plan).
    Exit status: 0 all done, 1 some files failed, 2 the run itself could not go on (a bad
    setting, or a fatal error that stopped it early), 3 every file was processed but files gone
    from the source were kept by the deletion guard.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python flows/ingest.py", description=main.__doc__)
    parser.add_argument("paths", nargs="*", help="only these files (as listed by the source)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    parser.add_argument(
        "--force-delete", action="store_true", help="delete past TIDAL_MAX_DELETE_SHARE"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="list unchanged files in the table too"
    )
    args = parser.parse_args(argv)
    # Python's last garbage collection, at exit, walks every object Prefect, pydantic and the
    # clients made (~0.5 s of a 150-file run here) only to free memory the process is giving
    # back anyway; frozen, they are left to the exit. Finalizers do not depend on it: files
    # and the report are closed when written, connections are dropped by the exit itself.
    atexit.register(gc.freeze)
    outcome: RunSummary | Plan | BaseException | None = None
    configured = get_current_settings().api.url is not None
    server: LocalServer | None = None
    settings: Settings | None = None
    started_at = datetime.now(UTC)
    try:
        settings = load_settings(force_delete=args.force_delete or None)
        preflight(settings)  # a wrong key or bucket fails here, not after Prefect's start-up
        run = _prepare(settings, args.paths or None)
        if not configured:
            # No Prefect server is configured, so one must be started (or found running) for a
            # flow run: only when there is anything for it to do.
            outcome = _without_a_flow(run, settings, dry_run=args.dry_run)
            if isinstance(outcome, RunSummary):
                print("tidal: nothing to ingest, so no Prefect flow run was started")
        if outcome is None:
            # The model loads, and the key is checked, while a server starts and the flow run
            # is created.
            _warm_up(
                run.pipeline.embedder, settings, check=bool(run.work.todo) and not args.dry_run
            )
            server = None if configured else _local_server(settings)
    except TidalError as exc:
        _prepared.clear()  # no flow will take it over
        print(f"tidal: {exc}", file=sys.stderr)
        if settings is not None and not args.dry_run:
            record_stopped_start(settings, str(exc), started_at=started_at)
        return 2
    try:
        if outcome is None:
            with temporary_settings(updates=_ad_hoc_settings(server)):
                state = tidal(
                    paths=args.paths or None,
                    dry_run=args.dry_run,
                    force_delete=args.force_delete or None,
                    return_state=True,
                )
                outcome = state.result(raise_on_failure=False)
                if not configured and server is None:  # Prefect's temporary one stops at exit
                    _let_the_server_record(state.state_details.flow_run_id, _summary_of(outcome))
    finally:
        _prepared.clear()  # taken over by the flow, or never to be
    if isinstance(outcome, Plan):
        print(outcome.render())
        return 0
    summary = _summary_of(outcome)
    if summary is None:
        print(f"tidal: the run failed: {outcome}", file=sys.stderr)
        return 2
    table = summary_frame(summary)
    if not args.verbose:  # unchanged files are counted below; the CSV and artifact list them all
        table = table[table["status"] != "skipped"]
    if len(table):
        print(table.to_string(index=False, max_colwidth=60))
    print(summary.render())
    ended, reason = outcome_of(summary)
    code, said = _EXIT[ended]
    if said:
        print(f"tidal: {said}: {reason}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
