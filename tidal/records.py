"""The records that flow between stages: scan → parse → chunk → embed → store.

All frozen: a stage never edits what an earlier stage produced, which keeps retries
and cached results honest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeAlias

import numpy as np

from tidal.formats import FileKind, file_kind

Vector: TypeAlias = np.ndarray
"""One embedding: a 1-D float32 array. Not a list of floats: a Python float costs 32 bytes
against 4, which made a 10 MB file's vectors alone weigh ~400 MB."""

FileStatus = Literal["ingested", "skipped", "failed", "stopped", "ignored"]
"""``stopped``: not processed because the run stopped early on a fatal error; ``ignored``:
listed by the source but not a document Tidal ingests (its type, or not a regular file)."""
STATUSES: tuple[FileStatus, ...] = ("ingested", "skipped", "failed", "stopped", "ignored")


def shown(path: str) -> str:
    """``path`` fit for one log line: a newline or other control character in a file name is
    escaped, so one file never splits into two lines of a log."""
    return path if path.isprintable() else repr(path)[1:-1]


@dataclass(frozen=True)
class SourceFile:
    """One object in the source; ``content_hash`` is its change key (sha256 or eTag)."""

    path: str
    size: int
    content_hash: str
    ignored: str | None = None
    """Why the source will not hand this entry out (a FIFO, a link loop...), or None."""

    @property
    def kind(self) -> FileKind:
        return file_kind(self.path)


@dataclass(frozen=True)
class Document:
    """A file turned into plain text, ready to chunk."""

    path: str
    kind: FileKind
    text: str
    title: str
    page_starts: tuple[int, ...] = ()
    """PDF only: where each page begins in ``text`` (page n at ``page_starts[n - 1]``)."""


@dataclass(frozen=True)
class Chunk:
    """A window of a document's text and what is embedded with it.

    ``text`` is what a search shows; ``embed_text`` is what the model reads: the ``context``
    (the document's title and the chunk's section path) above the text, so a chunk of bare
    rules still says which document and section it belongs to. ``hash`` is the embedded text's,
    the key of the embedding cache: the same text under another heading is another vector.
    """

    index: int
    text: str
    token_count: int
    """cl100k tokens of ``text``."""
    hash: str
    start: int = 0
    """Where ``text`` begins in the document's text (characters)."""
    section: str = ""
    """The headings the chunk sits under, outermost first: ``Requirements > Offline edits``."""
    context: str = ""

    @property
    def embed_text(self) -> str:
        return f"{self.context}\n\n{self.text}" if self.context else self.text


@dataclass(frozen=True)
class EmbeddedChunk:
    chunk: Chunk
    embedding: Vector


@dataclass(frozen=True)
class FileResult:
    """What happened to one file; the task's return value and the summary's row."""

    path: str
    status: FileStatus
    chunks: int = 0
    tokens: int = 0
    reused: int = 0
    """Chunks whose vector came from the store instead of the embedder."""
    seconds: float = 0.0
    attempts: int = 0
    """Tries at ingesting the file in this run; 0 for a file settled without one (unchanged,
    ignored, not started), so a report never shows a try that did not happen."""
    error: str | None = None
    error_kind: str | None = None


@dataclass(frozen=True)
class RunSummary:
    """Every file's result plus the wall-clock time of the run."""

    results: tuple[FileResult, ...]
    seconds: float
    source: str = ""
    deleted: tuple[str, ...] = ()
    deletion_refused: str | None = None
    stopped: str | None = None
    """Why the run stopped early (a fatal error: the cause and the fix), or None."""
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counted = Counter(r.status for r in self.results)
        object.__setattr__(self, "counts", {s: counted.get(s, 0) for s in STATUSES})

    @property
    def failed(self) -> tuple[FileResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def chunks(self) -> int:
        return sum(r.chunks for r in self.results if r.status == "ingested")

    @property
    def reused(self) -> int:
        return sum(r.reused for r in self.results if r.status == "ingested")

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.results if r.status == "ingested")

    def render(self) -> str:
        """The closing lines a person reads after a run."""
        c = self.counts
        rare = f", not processed {c['stopped']}" if c["stopped"] else ""
        rare += f", ignored {c['ignored']}" if c["ignored"] else ""
        lines = [
            f"Tidal: {len(self.results)} files from {self.source}",
            f"  ingested {c['ingested']}, skipped {c['skipped']} (unchanged), failed {c['failed']}"
            + rare,
            f"  chunks {self.chunks} ({self.reused} reused), tokens {self.tokens}, "
            f"{self.seconds:.1f} s",
        ]
        if self.deleted:
            lines.append(f"  deleted {len(self.deleted)} file(s) gone from the source")
        if self.deletion_refused:
            lines.append(f"  deletion refused: {self.deletion_refused}")
        if self.stopped:
            lines.append(f"  STOPPED EARLY: {self.stopped}")
        for r in self.failed:
            tries = f", {r.attempts} attempt(s)" if r.attempts else ""
            lines.append(f"  FAILED {shown(r.path)} ({r.error_kind}{tries}): {r.error}")
        return "\n".join(lines)


RunOutcome = Literal["completed", "failed", "stopped", "deletion refused"]


def outcome_of(summary: RunSummary) -> tuple[RunOutcome, str | None]:
    """How a run ended, worst first, with the one-line reason when it did not complete."""
    if summary.stopped:
        return "stopped", summary.stopped
    if summary.failed:
        return "failed", f"{len(summary.failed)} file(s) failed; `tidal failed` lists them"
    if summary.deletion_refused:
        return "deletion refused", summary.deletion_refused
    return "completed", None


@dataclass(frozen=True)
class RunRecord:
    """One finished run as the index's ledger (``ingest_runs``) keeps it."""

    started_at: datetime
    finished_at: datetime
    source: str
    outcome: RunOutcome
    counts: dict[str, int]
    chunks: int
    tokens: int
    deleted: int
    seconds: float
    message: str | None = None
    flow_run_id: str | None = None
    flow_run_name: str | None = None

    @classmethod
    def of(
        cls,
        summary: RunSummary,
        *,
        started_at: datetime,
        finished_at: datetime,
        flow_run: tuple[str, str] | None = None,
    ) -> RunRecord:
        outcome, message = outcome_of(summary)
        return cls(
            started_at=started_at,
            finished_at=finished_at,
            source=summary.source,
            outcome=outcome,
            counts=dict(summary.counts),
            chunks=summary.chunks,
            tokens=summary.tokens,
            deleted=len(summary.deleted),
            seconds=summary.seconds,
            message=message,
            flow_run_id=flow_run[0] if flow_run else None,
            flow_run_name=flow_run[1] if flow_run else None,
        )

    @classmethod
    def stopped_at_start(
        cls, source: str, reason: str, *, started_at: datetime, finished_at: datetime
    ) -> RunRecord:
        """A run that stopped before any file: listing refused, a service down, a bad key."""
        return cls(
            started_at=started_at,
            finished_at=finished_at,
            source=source,
            outcome="stopped",
            counts={},
            chunks=0,
            tokens=0,
            deleted=0,
            seconds=(finished_at - started_at).total_seconds(),
            message=reason,
        )
