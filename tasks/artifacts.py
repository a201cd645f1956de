"""What a run shows in the Prefect UI: live progress, then a per-file table and the totals."""

from __future__ import annotations

import time
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tidal.records import RunSummary
from tidal.report import summary_frame, totals_markdown


class Progress:
    """A progress artifact (done / total files), updated as files finish.

    Updates are throttled to one per ``every`` seconds (and the last one), so ten thousand
    files do not mean ten thousand API calls.
    """

    def __init__(self, total: int, *, every: float = 1.0) -> None:
        self.total = max(total, 1)
        self.every = every
        self._last = 0.0
        self.id: UUID = create_progress_artifact(
            progress=0.0, key="tidal-progress", description=f"files done of {total}"
        )

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done < self.total and now - self._last < self.every:
            return
        self._last = now
        update_progress_artifact(
            artifact_id=self.id,
            progress=round(100.0 * done / self.total, 1),
            description=f"{done} of {self.total} files done",
        )


def publish(summary: RunSummary) -> None:
    """The per-file table and the totals, as artifacts of the current flow run."""
    create_table_artifact(
        table=summary_frame(summary).to_dict(orient="records"),
        key="tidal-files",
        description="one row per file: status, chunks, tokens, attempts, seconds, error",
    )
    create_markdown_artifact(
        markdown=totals_markdown(summary), key="tidal-summary", description="totals and failures"
    )
