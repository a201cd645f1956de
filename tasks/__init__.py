"""Thin Prefect tasks over the ``tidal`` package: retries, caching, result storage, logging."""

from tasks.ingest import configured_ingest_task, ingest_file
from tasks.results import result_storage

__all__ = ["configured_ingest_task", "ingest_file", "result_storage"]
