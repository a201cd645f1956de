"""The task runner a run's settings ask for: threads in this process, or Dask processes.

A Dask run needs a Prefect server that every Dask worker reaches: with the temporary server
``python flows/ingest.py`` starts when ``PREFECT_API_URL`` is unset, each worker process would
start a temporary server of its own and report to it, not to the run.
"""

from __future__ import annotations

import logging
import math
import os

from prefect.context import FlowRunContext
from prefect.settings import get_current_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from tidal.errors import ConfigError
from tidal.settings import Settings


def slots(settings: Settings) -> int:
    """Files in flight at once: ``concurrency``, rounded up to fill every local Dask worker."""
    if settings.task_runner == "dask" and not settings.dask_address:
        return settings.dask_workers * _threads_per_worker(settings)
    return settings.concurrency


def _threads_per_worker(settings: Settings) -> int:
    return math.ceil(settings.concurrency / settings.dask_workers)


def task_runner(settings: Settings) -> TaskRunner:
    """``ThreadPoolTaskRunner`` of ``concurrency`` threads, or a ``DaskTaskRunner``."""
    if settings.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.concurrency)
    api_url = get_current_settings().api.url
    if not api_url:
        raise ConfigError(
            "TIDAL_TASK_RUNNER=dask needs a Prefect server every Dask worker can reach; start "
            "one (scripts/stack.sh, or `prefect server start`) and set PREFECT_API_URL"
        )
    try:
        import dask.config

        from tasks.dask_runner import SharedContextDaskTaskRunner as DaskTaskRunner
    except ImportError:
        raise ConfigError(
            "TIDAL_TASK_RUNNER=dask needs prefect-dask: .venv/bin/pip install -e '.[dask]'"
        ) from None

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    # A local cluster's scheduler and nannies log every worker's comings and goings at INFO,
    # and each worker a banner of 20 lines. A worker sets up its logging as it imports
    # distributed, before the nanny hands it ``env``: only the environment it inherits counts.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": settings.dask_workers,
            "threads_per_worker": _threads_per_worker(settings),
            "processes": True,
            "dashboard_address": None,
            # The worker processes report to this run's server, whichever way it was set.
            "env": {"PREFECT_API_URL": api_url},
            # Merged over this process's own: the nanny replaces whole top-level sections.
            "config": dask.config.merge(dask.config.config, WORKER_CONFIG),
        }
    )


WORKER_CONFIG = {"distributed": {"worker": {"profile": {"enabled": False}}}}
"""Dask configuration for the workers of a cluster Tidal starts. Dask's statistical profiler
samples every worker thread each 10 ms and keeps the last 1,000 seconds of call trees, one per
second, for the dashboard's profile tab: hundreds of MB per worker that grow through a run's
first quarter hour, for a tab a run does not need. A cluster started apart sets it in its workers'
environment (``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=false``, docs/scaling.md)."""


def forget_linked_results() -> None:
    """Drop the links Prefect keeps from task results to their states in this flow run.

    Prefect's engine links every task's result, and each field of it, to a copy of the task
    run's final state for the whole flow run, to spot an upstream task when a result is passed
    to another task. Tidal passes none, and the links would hold a State per file in the flow
    process until the run ends. (prefect-dask's workers start each task with none.)
    """
    context = FlowRunContext.get()
    if context is not None:
        context.run_results.clear()
