"""What a run shows in the Prefect UI: live progress, then a per-file table and the totals."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from uuid import UUID

from prefect import get_client
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run

from tidal.records import RunSummary
from tidal.report import attention_frame, totals_markdown


class Progress:
    """A progress artifact (done / total files), updated as files finish.

    Updates are throttled to one per ``every`` seconds (and the last one), so ten thousand
    files do not mean ten thousand API calls.
    """

    def __init__(self, total: int, *, done: int = 0, every: float = 1.0) -> None:
        self.total = max(total, 1)
        self.every = every
        self._last = 0.0
        self.id: UUID = create_progress_artifact(
            progress=self._percent(done),
            key="tidal-progress",
            description=f"{done} of {total} files done (unchanged files count as done)",
        )

    def _percent(self, done: int) -> float:
        return round(100.0 * done / self.total, 1)

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done < self.total and now - self._last < self.every:
            return
        self._last = now
        update_progress_artifact(
            artifact_id=self.id,
            progress=self._percent(done),
            description=f"{done} of {self.total} files done",
        )


TABLE_ROWS = 1000
"""The most rows of the per-file table artifact. The server stores the table, and the UI
renders it, as one JSON value that grows with the corpus and that nobody can page through;
the run's CSV report keeps every row."""


def publish(summary: RunSummary, report: Path) -> None:
    """The per-file table (failed files first) and the totals, as artifacts of the current
    flow run; ``report`` is the run's CSV, which lists every file."""
    table = attention_frame(summary, TABLE_ROWS)
    files = len(summary.results)
    shown = "every file" if len(table) == files else f"the first {len(table):,} of {files:,} files"
    create_table_artifact(
        table=table.to_dict(orient="records"),
        key="tidal-files",
        description=(
            f"{shown}, failed and not processed first, then ingested, ignored and unchanged: "
            f"status, chunks, tokens, attempts, seconds, error. Every file: {report.resolve()}"
        ),
    )
    create_markdown_artifact(
        markdown=totals_markdown(summary), key="tidal-summary", description="totals and failures"
    )


def label_run(*, files: int, settled: Mapping[str, int], dry_run: bool) -> None:
    """Labels on the flow run: what its task runs do not show, for the UI and API readers.

    Files settled without a task run - unchanged, ignored, or failed and unchanged since - are
    counted in the run's own labels, and a dry run is labelled as one. (``tidal status`` reads
    the index's own run ledger instead, which has no dry runs.)
    """
    labels = {
        "tidal.files": str(files),
        "tidal.unchanged": str(settled.get("skipped", 0)),
        "tidal.ignored": str(settled.get("ignored", 0)),
        "tidal.still_failed": str(settled.get("failed", 0)),
    }
    if dry_run:
        labels["tidal.dry_run"] = "true"
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(flow_run.id, labels)
