"""Thin Prefect tasks over the ``tidal`` package: retries, result storage, task runners."""

import logging

from tasks.ingest import configured_ingest_task, ingest_file
from tasks.results import result_storage
from tasks.runners import slots, task_runner

__all__ = ["configured_ingest_task", "ingest_file", "result_storage", "slots", "task_runner"]

# Prefect hands the "tidal" loggers its API handler (PREFECT_LOGGING_EXTRA_LOGGERS) but not its
# level, so their INFO lines - a 429 wait and its length, deletions - were silently dropped.
logging.getLogger("tidal").setLevel(logging.getLogger("prefect.extra").getEffectiveLevel())
