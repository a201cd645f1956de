"""Driving a prepared run on an executor: a bounded window of files in flight.

``drive`` works with any executor whose ``submit`` returns a handle with
``add_done_callback`` (concurrent.futures, Prefect's task runners); ``run_in_threads`` is the
whole run on a plain thread pool, for embedding Tidal in a program, benchmarks and tests.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from tidal.records import FileResult, RunSummary, SourceFile
from tidal.run.ingest_run import IngestRun, Outcome


class Handle(Protocol):
    """What an executor's ``submit`` returns: a concurrent.futures or Prefect future."""

    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...


def drive(
    run: IngestRun,
    submit: Callable[[SourceFile], Handle],
    outcome: Callable[[Any], Outcome],
    *,
    window: int,
    on_settled: Callable[[FileResult], None] | None = None,
) -> None:
    """Run the prepared work, ``window`` files at a time, settling each as it completes.

    Files are submitted as slots free up rather than all at once, so a fatal error stops the
    run with at most ``window`` files started, and ten thousand files never mean ten thousand
    futures held at once.
    """
    run.start()
    finished: queue.SimpleQueue[tuple[Handle, SourceFile]] = queue.SimpleQueue()
    pending = deque(run.work.todo)
    in_flight = 0
    while True:
        while pending and in_flight < window and run.stopped is None:
            file = pending.popleft()
            handle = submit(file)
            handle.add_done_callback(lambda h, f=file: finished.put((h, f)))
            in_flight += 1
        if not in_flight:
            return
        handle, file = finished.get()
        in_flight -= 1
        result = run.settle(file, outcome(handle))
        if result is None:
            pending.appendleft(file)
        elif on_settled is not None:
            on_settled(result)


def run_in_threads(
    run: IngestRun,
    *,
    concurrency: int,
    on_settled: Callable[[FileResult], None] | None = None,
) -> RunSummary:
    """The whole run on a plain thread pool: no Prefect, no task retries, same decisions."""
    if not run.prepared:
        run.prepare()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="tidal") as pool:
        drive(
            run,
            lambda file: pool.submit(run.pipeline.ingest, file),
            _future_outcome,
            window=concurrency,
            on_settled=on_settled,
        )
    return run.finish()


def _future_outcome(future: Future[FileResult]) -> Outcome:
    exc = future.exception()
    return exc if exc is not None else future.result()
