"""A run's per-file report as a table: printed at the end, saved as CSV, shown in Prefect."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tidal.records import FileResult, RunSummary, file_kind

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["path", "type", "status", "chunks", "tokens", "reused", "attempts", "seconds", "error"]
ATTENTION = {"failed": 0, "stopped": 1, "ingested": 2, "ignored": 3, "skipped": 4}
"""The order of the UI's table: what needs a look first, unchanged files last."""


def load_pandas_in_background() -> None:
    """Import pandas on a daemon thread now, so the report at the run's end does not wait for
    it. Only for a run whose files wait on the network (OpenAI): with the local model the
    import would compete with encoding and add its memory to the run's peak."""
    threading.Thread(
        target=importlib.import_module, args=("pandas",), name="tidal-pandas", daemon=True
    ).start()


def summary_frame(summary: RunSummary) -> pd.DataFrame:
    """One row per file, in path order. pandas is imported here, when a run ends, so a run
    with the local model does not carry it through its peak of encoding."""
    return _frame(summary.results)


def attention_frame(summary: RunSummary, limit: int) -> pd.DataFrame:
    """At most ``limit`` rows, failed and not processed files first, then the ingested, the
    ignored and the unchanged, each in path order: a table a person can read at 100,000 files
    (the CSV report keeps every row)."""
    first = sorted(summary.results, key=lambda r: (ATTENTION[r.status], r.path))
    return _frame(first[:limit])


def _frame(results: Sequence[FileResult]) -> pd.DataFrame:
    import pandas as pd

    rows = [
        {
            "path": r.path,
            "type": file_kind(r.path),
            "status": r.status,
            "chunks": r.chunks,
            "tokens": r.tokens,
            "reused": r.reused,
            "attempts": r.attempts,
            "seconds": round(r.seconds, 2),
            "error": r.error or "",
        }
        for r in results
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_csv(summary: RunSummary, folder: Path, *, now: datetime | None = None) -> Path:
    """``<folder>/run-<UTC time>.csv``; the folder is created when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"run-{stamp}.csv"
    summary_frame(summary).to_csv(path, index=False)
    return path


def totals_markdown(summary: RunSummary) -> str:
    """The run at a glance, for the Prefect UI."""
    c = summary.counts
    lines = [
        f"# Tidal run over `{summary.source}`",
        "",
        "| files | ingested | skipped (unchanged) | failed | ignored | not processed | deleted"
        " | chunks | reused | tokens | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {len(summary.results)} | {c['ingested']} | {c['skipped']} | {c['failed']} "
        f"| {c['ignored']} | {c['stopped']} | {len(summary.deleted)} | {summary.chunks} "
        f"| {summary.reused} | {summary.tokens} | {summary.seconds:.1f} |",
    ]
    if summary.failed:
        lines += [
            "",
            "## Failed files",
            "",
            "| path | kind | attempts | error |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{r.path}` | {r.error_kind} | {r.attempts} | {(r.error or '').replace('|', '/')} |"
            for r in summary.failed
        ]
    if summary.stopped:
        lines += ["", f"**Stopped early:** {summary.stopped}"]
    if summary.deletion_refused:
        lines += ["", f"**Deletion refused:** {summary.deletion_refused}"]
    return "\n".join(lines)


def describe_result(result: FileResult) -> str:
    """One file's outcome for a progress line: ``12 chunks (3 reused), 4810 tokens``."""
    if result.status == "ingested":
        reused = f" ({result.reused} reused)" if result.reused else ""
        retried = f", {result.attempts} attempts" if result.attempts > 1 else ""
        return f"{result.chunks} chunks{reused}, {result.tokens} tokens{retried}"
    if result.status == "skipped":
        return "unchanged, skipped"
    if result.status == "stopped":
        return f"not processed: {result.error}"
    if result.status == "ignored":
        return f"ignored: {result.error}"
    tries = f", {result.attempts} attempt(s)" if result.attempts else ""
    return f"FAILED ({result.error_kind}{tries}): {result.error}"
