"""One ingest run, start to end, with no orchestrator in it.

``IngestRun`` makes every decision of a run: what the listing means (``prepare``), what the run
would do (``plan``), what one file's outcome means (``settle``) and how the run ends
(``finish``). An executor drives the files in between (``tidal.run.executor``).

It is one class, over 300 lines, because its decisions share one state - the files settled so
far and whether the run stopped - that each step reads and the next extends.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tidal.embedders.catalog import PRICE_PER_MILLION_TOKENS
from tidal.errors import TidalError, error_kind, is_fatal
from tidal.formats import SUPPORTED_EXTENSIONS, extension
from tidal.pipeline import Pipeline
from tidal.records import FileResult, RunRecord, RunSummary, SourceFile
from tidal.run.plan import Plan, forecast
from tidal.settings import Settings
from tidal.store import FailedFile
from tidal.sync import (
    Changes,
    Deletion,
    is_unchanged,
    plan_deletions,
    split_by_state,
)

log = logging.getLogger("tidal.run")

ORCHESTRATION = "orchestration"
"""The error kind of a failure that came from the orchestrator, not from the file."""
KEEP_BOUGHT_VECTORS_DAYS = 7
"""How long vectors bought for a file that never got written are kept for its next attempt."""
BULK_LOAD_FILES = 200
"""The fewest files a run must write to drop a live (non-empty) vector index for its load."""

Outcome = FileResult | BaseException


@dataclass(frozen=True)
class Work:
    """What ``prepare`` made of one listing."""

    todo: tuple[SourceFile, ...]
    """New, changed and previously failed files, failed ones first: the only files run."""
    changes: Changes
    deletion: Deletion
    ignored: int = 0
    """Listed entries that will not be ingested (not part of ``changes``)."""

    @property
    def total(self) -> int:
        """Every file the run accounts for: what the progress and its "[n/total]" count to."""
        return self.changes.total + self.ignored


class IngestRun:
    """The decisions of one run over ``pipeline``; see the module docstring for the order."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_delete_share: float = 0.5,
        force_delete: bool = False,
        paths: Sequence[str] | None = None,
        price_per_million: float | None = None,
        extensions: Collection[str] = SUPPORTED_EXTENSIONS,
        max_file_bytes: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.extensions = frozenset(e.lower() for e in extensions)
        self.max_file_bytes = max_file_bytes
        self.max_delete_share = max_delete_share
        self.force_delete = force_delete
        self.paths = tuple(paths) if paths else None
        self.price_per_million = price_per_million
        self.stopped: TidalError | None = None
        self.flow_run: tuple[str, str] | None = None
        """(id, name) of the Prefect flow run driving this run, for the ledger; None without."""
        self._started_at = datetime.now(UTC)
        self._work: Work | None = None
        self._results: dict[str, FileResult] = {}
        self._rerun: set[str] = set()
        self._started = time.perf_counter()

    @classmethod
    def configured(
        cls, pipeline: Pipeline, settings: Settings, *, paths: Sequence[str] | None = None
    ) -> IngestRun:
        """The run the settings describe: guard, file types and, for OpenAI, the price."""
        price = None
        if settings.embedder == "openai":
            price = PRICE_PER_MILLION_TOKENS.get(settings.effective_model)
        return cls(
            pipeline,
            max_delete_share=settings.max_delete_share,
            force_delete=settings.force_delete,
            paths=paths,
            price_per_million=price,
            extensions=settings.accepted_extensions,
            max_file_bytes=int(settings.max_file_mb * 1_000_000),
        )

    @property
    def prepared(self) -> bool:
        return self._work is not None

    @property
    def work(self) -> Work:
        if self._work is None:
            raise RuntimeError("IngestRun.prepare() has not run")
        return self._work

    def counts(self) -> dict[str, int]:
        """Files accounted for so far, by status (after ``prepare``: those settled without
        running - unchanged, ignored, failed and unchanged since)."""
        return dict(Counter(r.status for r in self._results.values()))

    @property
    def done(self) -> int:
        """Files accounted for so far, unchanged ones included."""
        return len(self._results)

    def prepare(self) -> Work:
        """List the source and sort every file by what the run must do with it.

        A listing error raises here, before anything is decided: nothing is deleted. Unchanged
        files are settled on the spot, never run: a daily run over an unchanged corpus costs a
        listing and three reads of the file table (paths, current versions, failures).
        """
        source, store = self.pipeline.source, self.pipeline.store
        listed = list(source.list())
        store.adopt([f.path for f in listed if not f.ignored])
        stored = store.stored_paths()
        deletion = Deletion()
        if self.paths is not None:
            listed = self._only(listed)
        else:
            deletion = plan_deletions(
                [f.path for f in listed],  # an ignored entry still exists: never deleted
                stored,
                covers=source.covers,
                max_share=self.max_delete_share,
                force=self.force_delete,
            )
        files = []
        for file in listed:
            reason = file.ignored or self._unwanted(file)
            if reason:
                self._keep(FileResult(file.path, "ignored", error=reason))
            else:
                files.append(file)
        ignored = len(listed) - len(files)
        changes = split_by_state(files, store.current_files(self.pipeline.fingerprint), stored)
        failed_before = {f.path: f for f in store.failed_files()}
        todo = []
        for file in sorted(
            [*changes.added, *changes.changed], key=lambda f: (f.path not in failed_before, f.path)
        ):
            still = self._still_broken(file, failed_before.get(file.path))
            if still is not None:
                self._keep(still)
            else:
                todo.append(file)
        for file in changes.unchanged:
            self._keep(FileResult(file.path, "skipped"))
        self._work = Work(tuple(todo), changes, deletion, ignored)
        return self._work

    def plan(self) -> Plan:
        """The dry run of the prepared work: read, parse, chunk and price; change nothing."""
        ignored = [(r.path, r.error or "") for r in self._results.values() if r.status == "ignored"]
        return forecast(
            self.pipeline,
            self.work.changes,
            deletion=self.work.deletion,
            ignored=ignored,
            price_per_million=self.price_per_million,
        )

    def start(self) -> None:
        """Before the first file: check the embedder, and choose how the index is kept.

        A revoked key or an unknown model then stops the run after one small request, with
        nothing started; a run with nothing to embed asks nothing. A run that writes at least
        as many files as it keeps loads in bulk (see ``bulk_load``).
        """
        if not self.work.todo or self.stopped is not None:
            return
        try:
            self.pipeline.embedder.check()
        except TidalError as exc:
            if not is_fatal(exc):  # the files will meet it with their own retries
                log.warning("the embedder's check failed: %s", exc.message)
            else:
                self.stopped = exc
                log.error("stopping the run: %s", exc.message)
                return
        if self.bulk_load:
            log.info(
                "loading %d files in bulk: the vector index is built once after the last file "
                "(searches scan the table meanwhile)",
                len(self.work.todo),
            )
            self.pipeline.store.suspend_vector_index()

    @property
    def bulk_load(self) -> bool:
        """Whether to drop the vector index for this run and build it once at the end.

        Keeping an HNSW index up costs many times more per row than building it in one pass,
        but while it is down searches scan the table. So only a run that
        writes at least as many files as the index keeps unchanged, and at least
        ``BULK_LOAD_FILES`` unless the index is new or re-built (nothing kept), loads in bulk;
        ``tidal retry`` (``paths``) never does.
        """
        todo, kept = len(self.work.todo), len(self.work.changes.unchanged)
        return self.paths is None and todo >= kept and (kept == 0 or todo >= BULK_LOAD_FILES)

    def settle(self, file: SourceFile, outcome: Outcome) -> FileResult | None:
        """Account for one file's outcome; None asks the driver to run the file once more.

        * a FileResult: the file is done (ingested, or found current under its claim);
        * a fatal error (``is_fatal``): the run stops; the file is not recorded as failed,
          since it is not the file's fault;
        * any other TidalError: the file failed; recorded with its reason, kind and attempts;
        * anything else came from the orchestrator (the pipeline raises only TidalError), not
          from the file: it is run once more, and a second such failure is recorded with kind
          ``orchestration``, which is never permanent: the next run tries the file first.
        """
        if isinstance(outcome, FileResult):
            return self._keep(outcome)
        if is_fatal(outcome):
            assert isinstance(outcome, TidalError)
            if self.stopped is None:
                self.stopped = outcome
                log.error("stopping the run: %s", outcome.message)
            return self._keep(
                FileResult(
                    file.path,
                    "stopped",
                    attempts=outcome.attempts or 1,
                    error=outcome.message,
                    error_kind="fatal",
                )
            )
        if isinstance(outcome, TidalError):
            message, attempts, kind = outcome.message, outcome.attempts or 1, error_kind(outcome)
        else:
            if file.path not in self._rerun:
                self._rerun.add(file.path)
                log.warning(
                    "%r: the orchestrator failed around it (%s: %s); running it once more",
                    file.path,
                    type(outcome).__name__,
                    outcome,
                )
                return None
            message, attempts, kind = f"{type(outcome).__name__}: {outcome}", 1, ORCHESTRATION
        self.pipeline.store.record_failure(
            file.path,
            file.content_hash,
            fingerprint=self.pipeline.fingerprint,
            error=message,
            kind=kind,
            attempts=attempts,
        )
        return self._keep(
            FileResult(file.path, "failed", attempts=attempts, error=message, error_kind=kind)
        )

    def finish(self) -> RunSummary:
        """Delete what the source no longer lists (unless the run stopped) and sum up."""
        work = self.work
        if self.stopped is not None:
            for file in work.todo:
                if file.path not in self._results:
                    self._keep(
                        FileResult(file.path, "stopped", error="not started", error_kind="fatal")
                    )
        self.pipeline.store.build_vector_index()  # after a bulk load, or one a crash cut short
        self.pipeline.store.forget_kept_embeddings(KEEP_BOUGHT_VECTORS_DAYS)
        deletion = work.deletion
        deleted: tuple[str, ...] = ()
        if deletion.refused:
            log.warning("not deleting %d file(s): %s", len(deletion.paths), deletion.refused)
        elif deletion.paths and self.stopped is None:
            chunks = self.pipeline.store.delete_files(deletion.paths)
            deleted = deletion.paths
            log.info("deleted %d file(s) gone from the source (%d chunks)", len(deleted), chunks)
        summary = RunSummary(
            tuple(sorted(self._results.values(), key=lambda r: r.path)),
            seconds=time.perf_counter() - self._started,
            source=self.pipeline.source.uri,
            deleted=deleted,
            deletion_refused=deletion.refused,
            stopped=self.stopped.message if self.stopped is not None else None,
        )
        self.pipeline.store.record_run(
            RunRecord.of(
                summary,
                started_at=self._started_at,
                finished_at=datetime.now(UTC),
                flow_run=self.flow_run,
            )
        )
        return summary

    def _still_broken(self, file: SourceFile, failure: FailedFile | None) -> FileResult | None:
        """The recorded failure of a file whose bytes have not changed since it failed for a
        reason of its own: fetching it again would fail the same way. ``paths`` (``tidal
        retry``) always tries again."""
        if (
            failure is None
            or self.paths is not None
            or failure.error_kind != "permanent"
            or failure.fingerprint != self.pipeline.fingerprint
            or not is_unchanged(file, {failure.path: failure.content_hash})
        ):
            return None
        return FileResult(
            file.path,
            "failed",
            error=f"unchanged since it failed: {failure.error}",
            error_kind="permanent",
        )

    def _unwanted(self, file: SourceFile) -> str | None:
        """Why the listing alone says a file is not for ingesting, before anything downloads
        it: its type, or a size no document of ours has (a 20 MB JSON is 18,000 chunks)."""
        ext = extension(file.path)
        if ext not in self.extensions:
            return f"file type {ext or '(none)'} is not ingested (TIDAL_EXTENSIONS)"
        if self.max_file_bytes is not None and file.size > self.max_file_bytes:
            return (
                f"too large: {file.size / 1e6:.1f} MB, over TIDAL_MAX_FILE_MB="
                f"{self.max_file_bytes / 1e6:g}"
            )
        return None

    def _keep(self, result: FileResult) -> FileResult:
        self._results[result.path] = result
        return result

    def _only(self, files: Sequence[SourceFile]) -> list[SourceFile]:
        """The listed files among ``paths``; a path the source does not list is reported."""
        wanted = set(self.paths or ())
        chosen = [f for f in files if f.path in wanted]
        for missing in sorted(wanted - {f.path for f in chosen}):
            log.warning("%r: not in the source listing, nothing to retry", missing)
        return chosen
