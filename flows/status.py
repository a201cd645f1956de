"""``tidal status``: the latest run's state and per-file counts, read from the Prefect API.

The Bull queue was watched with ``redis-cli LLEN``; Tidal's queue is Prefect's own record of
the ``tidal`` flow's runs and their task runs, so this asks the API the same question. Files
that were unchanged are not task runs: the run's ``tidal.unchanged`` label counts them, and
dry runs (labelled ``tidal.dry_run``) are not syncs, so they are passed over.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterStartTime,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort

STATUSES = ("pending", "running", "completed", "failed", "skipped")
_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class RunStatus:
    name: str
    state: str
    started: datetime | None
    seconds: float
    counts: dict[str, int]

    def render(self) -> str:
        files = sum(self.counts.values())
        started = self.started.strftime("%Y-%m-%d %H:%M:%S %Z") if self.started else "not started"
        return "\n".join(
            [
                f"tidal run {self.name!r}: {self.state}, started {started}, {self.seconds:.1f} s",
                f"  files {files}: " + ", ".join(f"{k} {self.counts[k]}" for k in STATUSES)
                + (f", ignored {self.counts['ignored']}" if self.counts.get("ignored") else ""),
            ]
        )


def _bucket(state_type: StateType | None, name: str | None) -> str:
    if state_type == StateType.COMPLETED:
        return "skipped" if name == "Cached" else "completed"
    if state_type in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED):
        return "failed"
    if state_type in (StateType.RUNNING, StateType.CANCELLING):
        return "running"
    return "pending"  # PENDING, SCHEDULED (including AwaitingRetry), PAUSED


def latest_status(flow_name: str = "tidal") -> RunStatus | None:
    """The most recently started run of ``flow_name``, or None if it never ran."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
            sort=FlowRunSort.START_TIME_DESC,
            limit=20,
        )
        syncs = [r for r in runs if r.labels.get("tidal.dry_run") != "true"]
        if not syncs:
            return None
        run = syncs[0]
        latest: dict[str, tuple[datetime, str]] = {}  # a file run twice counts as it ended last
        offset = 0
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                limit=200,
                offset=offset,
            )
            for t in page:
                if not (t.task_key and "ingest_file" in t.task_key):
                    continue
                bucket = _bucket(
                    t.state.type if t.state else None, t.state.name if t.state else None
                )
                seen = (t.updated or _EPOCH, bucket)
                latest[t.name] = max(latest.get(t.name, seen), seen)
            if len(page) < 200:
                break
            offset += 200
    counts = Counter(bucket for _, bucket in latest.values())
    counts["skipped"] += int(run.labels.get("tidal.unchanged", 0))
    counts["failed"] += int(run.labels.get("tidal.still_failed", 0))
    counts["ignored"] += int(run.labels.get("tidal.ignored", 0))
    return RunStatus(
        name=run.name,
        state=run.state.name if run.state else "unknown",
        started=run.start_time,
        seconds=run.estimated_run_time.total_seconds(),  # includes the time a live run has run
        counts={k: counts.get(k, 0) for k in (*STATUSES, "ignored")},
    )
