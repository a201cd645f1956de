"""Thin Prefect tasks over the ``tidal`` package: retries, result storage, task runners."""

from tasks.ingest import configured_ingest_task, ingest_file
from tasks.results import result_storage
from tasks.runners import slots, task_runner

__all__ = ["configured_ingest_task", "ingest_file", "result_storage", "slots", "task_runner"]
