"""How a run that did not complete cleanly ends: one exception per way, carrying its summary.

The message of each becomes the flow run's Failed state message, the one line
``prefect deployment run --watch`` and the UI show for the run, so it names the cause.
"""

from __future__ import annotations

from tidal.records import RunSummary, outcome_of


class RunEnded(Exception):
    """A run that ended other than completed; ``summary`` holds every file's outcome."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary
        super().__init__(self.describe(summary))

    @classmethod
    def describe(cls, summary: RunSummary) -> str:
        raise NotImplementedError

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Rebuilt from the summary alone: results cross process boundaries (Dask, Redis).
        return (type(self), (self.summary,))


class IngestFailed(RunEnded):
    """Some files failed; every other file was still processed. Its message names the first
    failed files with their reasons, and where the rest are."""

    SHOWN = 3
    """Failed files named in the message, each with its reason (cut to ``REASON_CHARS``)."""
    REASON_CHARS = 120

    @classmethod
    def describe(cls, summary: RunSummary) -> str:
        failed = summary.failed
        named = "; ".join(
            f"{r.path} ({r.error_kind}: {_cut(r.error or 'no reason recorded', cls.REASON_CHARS)})"
            for r in failed[: cls.SHOWN]
        )
        more = f"; and {len(failed) - cls.SHOWN} more" if len(failed) > cls.SHOWN else ""
        return (
            f"{len(failed)} of {len(summary.results)} files failed: {named}{more}; "
            "`tidal failed` lists them"
        )


class RunStopped(RunEnded):
    """A fatal error stopped the run early: one message, naming the cause and the fix."""

    @classmethod
    def describe(cls, summary: RunSummary) -> str:
        left = summary.counts["stopped"]
        return f"{summary.stopped} (the run stopped; {left} file(s) not processed)"


class DeletionRefused(RunEnded):
    """Every file was processed, but files gone from the source were kept: the guard refused.

    A run that quietly keeps stale files looks healthy for ever; failing it is what makes a
    schedule, an automation or a person notice and decide (``force_delete``, or fix the source).
    """

    @classmethod
    def describe(cls, summary: RunSummary) -> str:
        return f"deletion refused: {summary.deletion_refused}"


_RAISED = {"stopped": RunStopped, "failed": IngestFailed, "deletion refused": DeletionRefused}


def raise_for_outcome(summary: RunSummary) -> RunSummary:
    """The summary of a clean run; the ``RunEnded`` that says how it ended otherwise."""
    outcome, _ = outcome_of(summary)
    ended = _RAISED.get(outcome)
    if ended is not None:
        raise ended(summary)
    return summary


def summary_of(outcome: object) -> RunSummary | None:
    """The run's summary, whether it ended clean or with a ``RunEnded``; None for anything
    else (a plan, or an error of the orchestrator itself)."""
    summary = outcome.summary if isinstance(outcome, RunEnded) else outcome
    return summary if isinstance(summary, RunSummary) else None


def _cut(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
