"""The per-file task: ``Pipeline.ingest`` with retries for transient errors and a cache key."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.filesystems import WritableFileSystem
from prefect.runtime import task_run as current_task_run

from tidal.errors import TidalError, is_transient
from tidal.pipeline import Pipeline
from tidal.records import FileResult, SourceFile
from tidal.settings import Settings

CACHE_PREFIX = "tidal"


def file_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """``tidal:<fingerprint>:<sha256(path, change key)>``: a re-run hits it only if nothing changed.

    It is also the Redis key the result lands under, hence the ``tidal`` prefix.
    """
    file: SourceFile = parameters["file"]
    pipeline: Pipeline = parameters["pipeline"]
    digest = hashlib.sha256(f"{file.path}\x00{file.content_hash}".encode()).hexdigest()
    return f"{CACHE_PREFIX}:{pipeline.fingerprint}:{digest}"


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only what may succeed next time: a bad file or a bug fails at once."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's own exception, re-raised to inspect it
        return is_transient(exc)
    return False


def backoff(first_delay: float, retries: int) -> list[float]:
    """``first_delay`` doubling each retry: 2, 4, 8 s by default, as the Bull queue did."""
    return [first_delay * 2**i for i in range(retries)]


@task(
    name="ingest-file",
    task_run_name="{file.path}",
    retries=3,
    retry_delay_seconds=backoff(2.0, 3),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_key_fn=file_cache_key,
    persist_result=True,
)
def ingest_file(file: SourceFile, pipeline: Pipeline) -> FileResult:
    """Ingest one file. Raises on failure so Prefect shows the file's task run as Failed."""
    attempt = int(current_task_run.run_count or 1)
    try:
        return pipeline.ingest(file, attempt=attempt)
    except TidalError as exc:
        exc.attempts = attempt
        raise


def configured_ingest_task(
    settings: Settings, storage: WritableFileSystem | Path, *, refresh_cache: bool = False
) -> Task[..., FileResult]:
    """``ingest_file`` with this run's retry policy and result storage (see ``result_storage``)."""
    return ingest_file.with_options(
        retries=settings.retries,
        retry_delay_seconds=backoff(settings.retry_delay_seconds, settings.retries) or 0,
        result_storage=storage,
        refresh_cache=refresh_cache,
    )
