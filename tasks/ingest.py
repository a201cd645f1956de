"""The per-file task: ``Pipeline.ingest`` with retries for transient errors.

The task carries data only - the file and the run's ``PipelineSpec`` - and takes its pipeline
from the process-wide cache, so the same task runs on threads, local processes or a cluster.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.filesystems import WritableFileSystem
from prefect.runtime import task_run as current_task_run
from prefect.tasks import exponential_backoff

from tidal.errors import TidalError, is_fatal, is_transient
from tidal.records import FileResult, SourceFile
from tidal.runtime import PipelineSpec, shared_pipeline
from tidal.settings import Settings

CACHE_PREFIX = "tidal"


class _QuietCompletions(logging.Filter):
    """Drops the task engine's "Finished in state Completed()" line.

    The flow already logs one line per file, with its chunks and tokens; a second line per
    file would double the log records sent to the API (thousands a run) and say only what the
    task run's state shows. Retries, failures and crashes are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        finished = isinstance(record.msg, str) and record.msg.startswith("Finished in state ")
        return not (finished and record.levelno == logging.INFO)


logging.getLogger("prefect.task_runs").addFilter(_QuietCompletions())


def file_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """``tidal:<fingerprint>:<sha256(path, change key)>``: the Redis key of the file's result.

    Results are written, never read back as a cache (the run is refreshed every time): whether
    a file needs work is the store's to say (``tidal.sync.is_unchanged``), and unchanged files
    are not task runs at all.
    """
    file: SourceFile = parameters["file"]
    spec: PipelineSpec = parameters["spec"]
    digest = hashlib.sha256(f"{file.path}\x00{file.content_hash}".encode()).hexdigest()
    return f"{CACHE_PREFIX}:{spec.fingerprint}:{digest}"


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only what may succeed next time: a bad file or a bad setting fails at once, and
    so does a service that stayed down past TIDAL_OUTAGE_SECONDS (it stops the run)."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's own exception, re-raised to inspect it
        return is_transient(exc) and not is_fatal(exc)
    return False


@task(
    name="ingest-file",
    task_run_name="{file.path}",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2.0),  # 2, 4, 8 s
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def ingest_file(file: SourceFile, spec: PipelineSpec) -> FileResult:
    """Ingest one file. Raises on failure so Prefect shows the file's task run as Failed."""
    attempt = int(current_task_run.run_count or 1)
    try:
        return shared_pipeline(spec).ingest(file, attempt=attempt)
    except TidalError as exc:
        exc.attempts = attempt
        raise


def configured_ingest_task(
    settings: Settings, storage: WritableFileSystem | None
) -> Task[..., FileResult]:
    """``ingest_file`` with this run's retry policy and result storage (see ``result_storage``).

    Without storage the task has no cache policy at all: Prefect then skips its cache-key and
    result transaction per task run, a measurable share of its per-file cost.
    """
    retrying = ingest_file.with_options(
        retries=settings.retries,
        retry_delay_seconds=exponential_backoff(settings.retry_delay_seconds)
        if settings.retries
        else 0,
    )
    if storage is None:
        return retrying
    return retrying.with_options(
        cache_policy=CachePolicy.from_cache_key_fn(file_cache_key),
        refresh_cache=True,
        persist_result=True,
        result_storage=storage,
    )
