"""A run started by hand (``tidal ingest``, ``python flows/ingest.py``): what happens around the
flow that a deployment's run does not need.

* The settings are validated and the source checked before Prefect starts, so a wrong key or
  bucket exits 2 in seconds.
* The run is prepared here, once; the flow takes it over (``flows.ingest.prepared``).
* With no Prefect server configured, a run with nothing to ingest (and a dry run) ends here,
  without a flow run: a temporary Prefect server costs more than an unchanged daily run.
* The model loads, and the embedder is checked, while the Prefect server starts.
* Runs report to the local Prefect server (``flows/server.py``), found running or started.
"""

from __future__ import annotations

import atexit
import gc
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from prefect import get_client
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)
from prefect.settings.legacy import Setting

from flows import server as local_server
from flows.ingest import finish, prepared, tidal
from flows.server import LocalServer
from tidal.errors import TidalError
from tidal.records import RunSummary, outcome_of
from tidal.report import summary_frame
from tidal.run import IngestRun, Plan, summary_of
from tidal.runtime import PipelineSpec, preflight, prepare_run
from tidal.settings import Settings, load_settings
from tidal.store import record_stopped_start

EXIT = {
    "completed": (0, None),
    "failed": (1, None),  # the table and the summary above name the files
    "stopped": (2, "the run stopped"),
    "deletion refused": (3, "deletion refused"),
}
"""The exit status for each way a run ends (``outcome_of``), and what it adds on stderr."""
INTERRUPTED = 130
"""The exit status after Ctrl-C, as shells report a process that SIGINT ended."""
_FINAL = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]

Outcome = RunSummary | Plan | BaseException | None


class AdHocRun:
    """One run started from a terminal, from its settings to its outcome."""

    def __init__(self, settings: Settings, *, paths: Sequence[str] = (), dry_run: bool = False):
        self.settings = settings
        self.paths = list(paths) or None
        self.dry_run = dry_run
        self.configured = get_current_settings().api.url is not None
        """A Prefect server is configured (``PREFECT_API_URL``): every run is a flow run."""
        self.run: IngestRun | None = None

    def prepare(self) -> IngestRun:
        """Check the source, list it and read the file table, before Prefect starts."""
        preflight(self.settings)
        self.run = prepare_run(self.settings, paths=self.paths)
        return self.run

    def finish_here(self) -> RunSummary | Plan | None:
        """The run's outcome when it needs no flow run; None when it does.

        A run with nothing to ingest (unchanged files, deletions, the still-broken) and a dry
        run start no task, so with no Prefect server configured they are decided, finished
        and written to the index's run ledger here, as the flow would.
        """
        run = self.run
        assert run is not None, "prepare() first"
        if self.configured or (run.work.todo and not self.dry_run):
            return None
        if self.dry_run:
            return run.plan()
        summary, _ = finish(run, self.settings)
        print("tidal: nothing to ingest, so no Prefect flow run was started")
        return summary

    def through_the_flow(self, *, force_delete: bool) -> Outcome:
        """Run the ``tidal`` flow in this process over the prepared run; its outcome."""
        run = self.run
        assert run is not None, "prepare() first"
        # The model loads, and the key is checked, while a server starts and the flow run is
        # created.
        _warm_up(run, self.settings, check=bool(run.work.todo) and not self.dry_run)
        server = None if self.configured else _local_server(self.settings)
        handoff = prepared.set((PipelineSpec.of(self.settings), run))
        try:
            with temporary_settings(updates=_prefect_settings(server)):
                state = tidal(
                    paths=self.paths,
                    dry_run=self.dry_run,
                    force_delete=force_delete or None,
                    return_state=True,
                )
                outcome = state.result(raise_on_failure=False)
                if not self.configured and server is None:  # Prefect's temporary one stops
                    _let_the_server_record(state.state_details.flow_run_id, summary_of(outcome))
        finally:
            prepared.reset(handoff)
        return outcome


def ingest(
    paths: Sequence[str] = (),
    *,
    dry_run: bool = False,
    force_delete: bool = False,
    verbose: bool = False,
) -> int:
    """Run once and print the per-file table and the summary (or the plan); the exit status.

    0 all done, 1 some files failed, 2 the run itself could not go on (a bad setting, or a
    fatal error that stopped it early), 3 every file was processed but files gone from the
    source were kept by the deletion guard, 130 interrupted (Ctrl-C).
    """
    # Python's last garbage collection, at exit, walks every object Prefect, pydantic and the
    # clients made only to free memory the process is giving back anyway; frozen, they are
    # left to the exit. Files and the report are closed when written, so nothing waits on it.
    atexit.register(gc.freeze)
    started_at = datetime.now(UTC)
    settings: Settings | None = None
    try:
        settings = load_settings(force_delete=force_delete or None)
        adhoc = AdHocRun(settings, paths=paths, dry_run=dry_run)
        adhoc.prepare()
        outcome = adhoc.finish_here()
        if outcome is None:
            outcome = adhoc.through_the_flow(force_delete=force_delete)
    except TidalError as exc:
        print(f"tidal: {exc}", file=sys.stderr)
        if settings is not None and not dry_run:
            record_stopped_start(settings, str(exc), started_at=started_at)
        return 2
    except KeyboardInterrupt:
        # Each file lands in one transaction: what finished is stored whole, the rest not at all.
        print(
            "tidal: interrupted; the files that finished are kept, and the next run carries "
            "on with the rest",
            file=sys.stderr,
        )
        return INTERRUPTED
    return report(outcome, verbose=verbose)


def report(outcome: Outcome, *, verbose: bool = False) -> int:
    """Print a run's outcome for a terminal; its exit status."""
    if isinstance(outcome, Plan):
        print(outcome.render())
        return 0
    summary = summary_of(outcome)
    if summary is None:
        print(f"tidal: the run failed: {outcome}", file=sys.stderr)
        return 2
    table = summary_frame(summary)
    if not verbose:  # unchanged files are counted below; the CSV and artifact list them all
        table = table[table["status"] != "skipped"]
    if len(table):
        print(table.to_string(index=False, max_colwidth=60))
    print(summary.render())
    ended, reason = outcome_of(summary)
    code, said = EXIT[ended]
    if said:
        print(f"tidal: {said}: {reason}", file=sys.stderr)
    return code


def _warm_up(run: IngestRun, settings: Settings, *, check: bool) -> None:
    """Get the embedder ready on a thread (load the model, open the client; with ``check``, one
    request) while the Prefect server is found or started and the flow run is created.

    The embedder is the one in this process's pipeline cache, which the flow asks again: it
    waits for this load instead of starting its own, and its own check finds this one passed.
    ``check`` only when the run has files to embed: an unchanged run sends no request. A
    failure here is left for the flow to meet again and report as the run's error.
    """
    embedder = run.pipeline.embedder

    def warm() -> None:
        try:
            if settings.task_runner == "threads":
                embedder.warm_up(check=check)
            elif check:  # Dask's workers embed, not this process: only the check helps here
                embedder.check()
        except Exception:  # noqa: BLE001 - the flow raises it again, with its context
            return

    threading.Thread(target=warm, name="tidal-warm-up", daemon=True).start()


def _local_server(settings: Settings) -> LocalServer | None:
    """The local server this run reports to, found running or started now; None when
    TIDAL_PREFECT_SERVER=temporary leaves it to Prefect's temporary one."""
    if settings.prefect_server == "temporary":
        return None
    server = local_server.running(settings.data_dir)
    if server is None:
        print("tidal: starting a local Prefect server, kept running for the next run ...")
        server = local_server.ensure(settings.data_dir)
    print(f"tidal: Prefect UI at {server.ui_url} (`tidal server stop` stops it)")
    return server


def _prefect_settings(server: LocalServer | None) -> dict[Setting, object]:
    """Prefect settings for the flow run this process starts itself.

    * the local server's API, when Tidal reports to its own;
    * no flow-run heartbeats, unless ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is set. They exist
      for deployments' runs, where an automation marks a run that stops beating as Crashed; a
      process run by hand has none watching, and Prefect joins the heartbeat thread at the end
      of every flow run while it sleeps out its current second.
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
    """Wait until Prefect's temporary server has recorded this flow's task runs as finished.

    The server records task runs from the events the flow sends, and on a loaded machine it
    lags behind the flow. At exit the flow process stops the server even if it is still
    writing, which cancels the write: the server logs ``Error flushing 1 events`` and a
    traceback after the run finished, and the UI loses that task run's last state. Waiting here
    costs one request when it has caught up; a server still behind after ``timeout`` is left.
    Prefect's client has no count of task runs, hence the API's own ``/task_runs/count``.
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
            if client.request("POST", "/task_runs/count", json=query).json() >= task_runs:
                return
            time.sleep(0.2)
