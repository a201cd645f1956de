"""One ingest run, start to end, with no orchestrator in it.

* ``IngestRun`` (``ingest_run``) makes every decision: what the listing means, what one file's
  outcome means, how the run ends; ``plan`` is its dry run.
* ``drive`` and ``run_in_threads`` (``executor``) keep a bounded number of files in flight on
  any executor; the Prefect flow is a thin shell over ``drive``.
* ``RunEnded`` and its kinds (``endings``) carry a run that did not complete cleanly.
"""

from tidal.run.endings import (
    DeletionRefused,
    IngestFailed,
    RunEnded,
    RunStopped,
    raise_for_outcome,
    summary_of,
)
from tidal.run.executor import Handle, drive, run_in_threads
from tidal.run.ingest_run import (
    BULK_LOAD_FILES,
    KEEP_BOUGHT_VECTORS_DAYS,
    ORCHESTRATION,
    IngestRun,
    Outcome,
    Work,
)
from tidal.run.plan import Plan

__all__ = [
    "BULK_LOAD_FILES",
    "KEEP_BOUGHT_VECTORS_DAYS",
    "ORCHESTRATION",
    "DeletionRefused",
    "Handle",
    "IngestFailed",
    "IngestRun",
    "Outcome",
    "Plan",
    "RunEnded",
    "RunStopped",
    "Work",
    "drive",
    "raise_for_outcome",
    "run_in_threads",
    "summary_of",
]
