"""The run's decisions (``tidal.run``) on the in-memory Source, Store and Embedder: no Prefect,
no services, milliseconds a test. The real backends have their own tests; the same run over
them, inside the real flow, is tested in test_flow, test_sync and test_production_path."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.flowkit import counts
from tidal.chunking import ChunkingOptions
from tidal.embedders.hashing import HashEmbedder
from tidal.errors import ConfigError, TransientError
from tidal.pipeline import Pipeline
from tidal.records import FileResult, SourceFile
from tidal.run import (
    DeletionRefused,
    IngestFailed,
    IngestRun,
    RunStopped,
    drive,
    raise_for_outcome,
    run_in_threads,
)
from tidal.sources.memory import MemorySource
from tidal.store.memory import MemoryStore


def _doc(i: int) -> bytes:
    return f"# Note {i}\n\nThe body of note {i}, with a sentence or two.\n".encode()


def _pipeline(files: dict[str, bytes], embedder: HashEmbedder | None = None) -> Pipeline:
    return Pipeline(
        source=MemorySource(files),
        embedder=embedder or HashEmbedder(),
        store=MemoryStore(),
        chunking=ChunkingOptions(64, 8),
    )


def _run(pipeline: Pipeline, **options) -> IngestRun:  # type: ignore[no-untyped-def]
    return IngestRun(pipeline, **options)


def _corpus(n: int) -> dict[str, bytes]:
    return {f"prds/note-{i:04d}.md": _doc(i) for i in range(n)}


def test_a_run_ingests_every_file_and_an_unchanged_rerun_runs_none() -> None:
    pipeline = _pipeline(_corpus(20))
    summary = run_in_threads(_run(pipeline), concurrency=3)
    assert summary.counts == counts(ingested=20)
    assert set(pipeline.store.current_files(pipeline.fingerprint)) == set(_corpus(20))

    source: MemorySource = pipeline.source  # type: ignore[assignment]
    embedder: HashEmbedder = pipeline.embedder  # type: ignore[assignment]
    source.reads.clear()
    embedder.calls.clear()
    run = _run(pipeline)
    work = run.prepare()
    assert work.todo == () and len(work.changes.unchanged) == 20
    submitted = _drive_with(run, pipeline.ingest)
    again = run.finish()
    assert submitted == [] and source.reads == [] and embedder.calls == []
    assert again.counts == counts(skipped=20)
    assert [r.path for r in again.results] == sorted(_corpus(20))


def test_edits_and_deletions_touch_only_those_files() -> None:
    files = _corpus(10)
    pipeline = _pipeline(files)
    run_in_threads(_run(pipeline), concurrency=2)
    source: MemorySource = pipeline.source  # type: ignore[assignment]
    source.files["prds/note-0003.md"] = b"# Note 3, edited\n\nNew words.\n"
    del source.files["prds/note-0007.md"]
    source.reads.clear()

    summary = run_in_threads(_run(pipeline), concurrency=2)

    assert source.reads == ["prds/note-0003.md"]
    assert summary.counts == counts(ingested=1, skipped=8)
    assert summary.deleted == ("prds/note-0007.md",)
    assert "prds/note-0007.md" not in pipeline.store.stored_paths()


def test_a_bad_file_fails_alone_is_recorded_and_goes_first_next_time() -> None:
    files = {**_corpus(5), "designs/a/broken.json": b'{"title": "Broken", "screens": ['}
    pipeline = _pipeline(files)
    summary = run_in_threads(_run(pipeline), concurrency=2)

    assert summary.counts == counts(ingested=5, failed=1)
    [failed] = summary.failed
    assert failed.error_kind == "permanent" and "invalid JSON" in (failed.error or "")
    [recorded] = pipeline.store.failed_files()
    assert recorded.path == "designs/a/broken.json" and recorded.error == failed.error
    with pytest.raises(IngestFailed, match="designs/a/broken.json"):
        raise_for_outcome(summary)

    source: MemorySource = pipeline.source  # type: ignore[assignment]
    source.reads.clear()
    again = run_in_threads(_run(pipeline), concurrency=2)  # the same broken bytes
    assert source.reads == []  # not downloaded again: it would fail the same way
    [still] = again.failed
    assert still.error == f"unchanged since it failed: {failed.error}"
    retry = _run(pipeline, paths=["designs/a/broken.json"])  # tidal retry: always tried
    assert [f.path for f in retry.prepare().todo] == ["designs/a/broken.json"]

    source.files["designs/a/broken.json"] = b'{"title": "Fixed?", "screens": ['
    source.files["prds/note-0004.md"] = b"# Changed\n\ntoo.\n"
    work = _run(pipeline).prepare()
    assert [f.path for f in work.todo] == ["designs/a/broken.json", "prds/note-0004.md"]


def test_an_unexpected_exception_inside_the_pipeline_is_the_files_own_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tidal.pipeline

    real = tidal.pipeline.parse

    def parse(path: str, data: bytes):  # type: ignore[no-untyped-def]
        if path.endswith("0001.md"):
            raise KeyError("heading")
        return real(path, data)

    monkeypatch.setattr(tidal.pipeline, "parse", parse)
    pipeline = _pipeline(_corpus(3))
    summary = run_in_threads(_run(pipeline), concurrency=2)
    [failed] = summary.failed
    assert (failed.path, failed.error_kind) == ("prds/note-0001.md", "permanent")
    assert failed.error == "KeyError: 'heading'"


class _Refusing(HashEmbedder):
    """Refuses every request as OpenAI refuses a revoked key; counts the requests.
    ``revoked_later``: its start-up check passes (the key is revoked mid-run)."""

    def __init__(self, *, revoked_later: bool = False) -> None:
        super().__init__()
        self.requests = 0
        self.revoked_later = revoked_later
        self._lock = threading.Lock()

    def check(self) -> None:
        if not self.revoked_later:
            self.embed(["probe"])

    def embed(self, texts):  # type: ignore[no-untyped-def]
        with self._lock:
            self.requests += 1
        raise ConfigError("OpenAI refused OPENAI_API_KEY (HTTP 401); check the key")


def test_a_refused_check_stops_the_run_before_any_file_with_one_request() -> None:
    embedder = _Refusing()
    pipeline = _pipeline(_corpus(50), embedder)

    summary = run_in_threads(_run(pipeline), concurrency=4)

    assert embedder.requests == 1
    assert summary.counts == counts(stopped=50)
    assert {r.error for r in summary.results} == {"not started"}
    assert summary.stopped and "OPENAI_API_KEY" in summary.stopped
    assert pipeline.store.failed_files() == []


def test_an_unchanged_run_does_not_check_the_embedder() -> None:
    pipeline = _pipeline(_corpus(5))
    run_in_threads(_run(pipeline), concurrency=2)
    pipeline.embedder = embedder = _Refusing()  # a check now would stop the run

    summary = run_in_threads(_run(pipeline), concurrency=2)

    assert embedder.requests == 0
    assert summary.counts == counts(skipped=5)


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_a_fatal_error_mid_run_stops_it_with_at_most_concurrency_files_started(
    concurrency: int,
) -> None:
    embedder = _Refusing(revoked_later=True)
    pipeline = _pipeline(_corpus(1000), embedder)
    pipeline.store.record_failure(
        "prds/gone.md",
        "x",
        fingerprint=pipeline.fingerprint,
        error="old",
        kind="permanent",
        attempts=1,
    )

    summary = run_in_threads(_run(pipeline), concurrency=concurrency)

    assert 1 <= embedder.requests <= concurrency
    assert summary.counts == counts(stopped=1000)
    assert summary.stopped and "OPENAI_API_KEY" in summary.stopped
    assert [f.path for f in pipeline.store.failed_files()] == ["prds/gone.md"]  # none added
    assert summary.deleted == ()  # a stopped run deletes nothing
    assert "prds/gone.md" in pipeline.store.stored_paths()
    with pytest.raises(RunStopped, match="OPENAI_API_KEY.*1000 file"):
        raise_for_outcome(summary)


def _drive_with(
    run: IngestRun, outcomes: Callable[[SourceFile], FileResult | BaseException]
) -> list[str]:
    """Drive ``run`` on a pool where ``outcomes`` stands for whatever the executor returned."""
    submitted: list[str] = []
    with ThreadPoolExecutor(2) as pool:

        def submit(file: SourceFile) -> Future[FileResult | BaseException]:
            submitted.append(file.path)
            return pool.submit(outcomes, file)

        drive(run, submit, lambda f: f.result(), window=2)
    return submitted


def test_an_orchestration_error_reruns_the_file_and_is_never_permanent() -> None:
    pipeline = _pipeline(_corpus(3))
    run = _run(pipeline)
    run.prepare()
    errors = {"prds/note-0001.md": 1, "prds/note-0002.md": 2}

    def executor(file: SourceFile) -> FileResult | BaseException:
        if errors.get(file.path, 0) > 0:
            errors[file.path] -= 1
            return RuntimeError("OrderedDict mutated during iteration")
        return pipeline.ingest(file)

    submitted = _drive_with(run, executor)
    summary = run.finish()

    assert submitted.count("prds/note-0001.md") == 2  # once more, then it landed
    assert submitted.count("prds/note-0002.md") == 2  # twice the orchestrator's fault: recorded
    by_path = {r.path: r for r in summary.results}
    assert by_path["prds/note-0001.md"].status == "ingested"
    failed = by_path["prds/note-0002.md"]
    assert (failed.status, failed.error_kind) == ("failed", "orchestration")
    [recorded] = pipeline.store.failed_files()
    assert recorded.error_kind == "orchestration"
    assert _run(pipeline).prepare().todo[0].path == "prds/note-0002.md"


def test_a_transient_error_is_recorded_as_transient_with_its_attempts() -> None:
    pipeline = _pipeline(_corpus(2))
    run = _run(pipeline)
    run.prepare()

    def executor(file: SourceFile) -> FileResult | BaseException:
        if file.path.endswith("0000.md"):
            return TransientError("storage answered 503", path=file.path, attempts=4)
        return pipeline.ingest(file)

    _drive_with(run, executor)
    [failed] = run.finish().failed
    assert (failed.error_kind, failed.attempts) == ("transient", 4)


def test_paths_run_only_those_files_and_delete_nothing() -> None:
    pipeline = _pipeline(_corpus(4))
    run_in_threads(_run(pipeline), concurrency=2)
    source: MemorySource = pipeline.source  # type: ignore[assignment]
    del source.files["prds/note-0000.md"]
    source.files["prds/note-0001.md"] = b"# One\n\nchanged\n"
    source.files["prds/note-0002.md"] = b"# Two\n\nchanged\n"
    source.reads.clear()

    summary = run_in_threads(
        _run(pipeline, paths=["prds/note-0001.md", "prds/missing.md"]), concurrency=2
    )

    assert source.reads == ["prds/note-0001.md"]
    assert [r.path for r in summary.results] == ["prds/note-0001.md"]
    assert summary.deleted == () and "prds/note-0000.md" in pipeline.store.stored_paths()


def test_the_plan_counts_what_the_run_then_does() -> None:
    pipeline = _pipeline(_corpus(6))
    run_in_threads(_run(pipeline), concurrency=2)
    source: MemorySource = pipeline.source  # type: ignore[assignment]
    source.files["prds/new.md"] = b"# New\n\nA new note.\n"
    embedder: HashEmbedder = pipeline.embedder  # type: ignore[assignment]

    dry = _run(pipeline)
    dry.prepare()
    plan = dry.plan()
    embedder.calls.clear()
    summary = run_in_threads(_run(pipeline), concurrency=2)

    assert plan.added == ("prds/new.md",) and len(plan.unchanged) == 6
    assert plan.chunks_to_embed == sum(len(batch) for batch in embedder.calls)
    assert summary.counts["ingested"] == 1


def test_files_of_other_types_are_ignored_by_name_and_never_read() -> None:
    files = {**_corpus(2), "prds/diagram.png": b"\x89PNG", "prds/spec.pdf": b"%PDF-1.7"}
    pipeline = _pipeline(files)
    summary = run_in_threads(IngestRun(pipeline, extensions={".md"}), concurrency=2)

    source: MemorySource = pipeline.source  # type: ignore[assignment]
    assert sorted(source.reads) == sorted(_corpus(2))
    assert summary.counts == counts(ingested=2, ignored=2)
    ignored = {r.path: r.error for r in summary.results if r.status == "ignored"}
    assert ignored == {
        "prds/diagram.png": "file type .png is not ingested (TIDAL_EXTENSIONS)",
        "prds/spec.pdf": "file type .pdf is not ingested (TIDAL_EXTENSIONS)",
    }
    assert pipeline.store.failed_files() == []
    assert raise_for_outcome(summary) is summary  # ignoring is not failing

    del source.files["prds/diagram.png"]
    again = run_in_threads(IngestRun(pipeline, extensions={".md"}), concurrency=2)
    assert again.deleted == ()  # never indexed, so nothing to delete


def test_a_refused_deletion_is_an_outcome_a_schedule_sees() -> None:
    pipeline = _pipeline(_corpus(4))
    run_in_threads(_run(pipeline), concurrency=2)
    source: MemorySource = pipeline.source  # type: ignore[assignment]
    for path in list(source.files)[:3]:
        del source.files[path]

    summary = run_in_threads(_run(pipeline), concurrency=2)

    assert summary.deleted == () and summary.failed == ()
    with pytest.raises(DeletionRefused, match="deletion refused: 3 of 4 indexed files"):
        raise_for_outcome(summary)


def test_a_file_over_the_size_cap_is_ignored_before_download() -> None:
    files = {**_corpus(2), "designs/a/huge.json": b'{"a": "' + b"x" * 3000 + b'"}'}
    pipeline = _pipeline(files)
    summary = run_in_threads(IngestRun(pipeline, max_file_bytes=2000), concurrency=2)

    source: MemorySource = pipeline.source  # type: ignore[assignment]
    assert "designs/a/huge.json" not in source.reads
    [ignored] = [r for r in summary.results if r.status == "ignored"]
    assert ignored.error == "too large: 0.0 MB, over TIDAL_MAX_FILE_MB=0.002"
    assert summary.counts["ingested"] == 2 and summary.failed == ()


def test_a_service_that_stays_down_stops_the_run_rather_than_failing_every_file() -> None:
    from tidal.errors import ServiceDown

    class Unbudgeted(HashEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            raise ServiceDown("the OpenAI budget's Redis (TIDAL_REDIS_URL) stopped answering")

    pipeline = _pipeline(_corpus(50), Unbudgeted())
    summary = run_in_threads(_run(pipeline), concurrency=2)
    assert summary.counts["stopped"] == 50 and summary.counts["failed"] == 0
    assert summary.stopped and "TIDAL_REDIS_URL" in summary.stopped
    assert pipeline.store.failed_files() == []


def test_the_total_a_run_counts_to_includes_ignored_files() -> None:
    files = {**_corpus(3), "prds/diagram.png": b"\x89PNG"}
    run = _run(_pipeline(files))
    work = run.prepare()
    assert work.total == 4 and run.done == 1  # the ignored one is accounted for already
    summary = run_in_threads(run, concurrency=2)
    assert run.done == work.total == len(summary.results)


def _index_during_run(pipeline: Pipeline, **options) -> tuple[set[bool], bool]:  # type: ignore[no-untyped-def]
    """Whether the index was suspended as each file settled, and after the run."""
    seen: set[bool] = set()
    run_in_threads(
        _run(pipeline, **options),
        concurrency=2,
        on_settled=lambda _: seen.add(pipeline.store.index_suspended),  # type: ignore[attr-defined]
    )
    return seen, pipeline.store.index_suspended  # type: ignore[attr-defined]


def test_a_first_ingest_loads_in_bulk_and_builds_the_index_at_the_end() -> None:
    pipeline = _pipeline(_corpus(20))
    assert _index_during_run(pipeline) == ({True}, False)


def test_a_small_change_to_a_big_index_keeps_the_index_up() -> None:
    files = _corpus(30)
    pipeline = _pipeline(files)
    run_in_threads(_run(pipeline), concurrency=2)
    pipeline.source.files["prds/note-0003.md"] = b"# Note 3\n\nEdited.\n"  # type: ignore[attr-defined]
    assert _index_during_run(pipeline) == ({False}, False)


def test_a_rebuild_of_every_file_loads_in_bulk_but_a_retry_never_does() -> None:
    rebuilt, retried = _pipeline(_corpus(30)), _pipeline(_corpus(30))
    for pipeline in (rebuilt, retried):
        run_in_threads(_run(pipeline), concurrency=2)
        pipeline.fingerprint = "another-model"  # every stored file is now out of date
    assert _index_during_run(rebuilt) == ({True}, False)
    assert _index_during_run(retried, paths=["prds/note-0001.md"]) == ({False}, False)


def test_a_live_index_is_dropped_only_for_a_load_of_bulk_load_files() -> None:
    pipeline = _pipeline(_corpus(40))
    run_in_threads(
        _run(pipeline, paths=[f"prds/note-{i:04d}.md" for i in range(10)]), concurrency=2
    )
    # 30 new files against 10 kept: more than kept, but a live index is not dropped for 30.
    assert _index_during_run(pipeline) == ({False}, False)


def test_the_report_counts_no_attempt_for_a_file_the_run_did_not_try() -> None:
    from tidal.report import summary_frame

    files = {**_corpus(2), "designs/a/broken.json": b'{"title": "Broken", "screens": ['}
    pipeline = _pipeline(files)
    run_in_threads(_run(pipeline), concurrency=2)
    source: MemorySource = pipeline.source  # type: ignore[assignment]
    source.files["prds/note-0001.md"] = b"# Note 1, edited\n\nNew words.\n"

    frame = summary_frame(run_in_threads(_run(pipeline), concurrency=2))

    rows = zip(frame["path"], frame["status"], frame["attempts"], strict=True)
    attempts = {path: (status, tries) for path, status, tries in rows}
    assert attempts == {
        "prds/note-0000.md": ("skipped", 0),
        "prds/note-0001.md": ("ingested", 1),
        "designs/a/broken.json": ("failed", 0),  # unchanged since it failed: not tried again
    }


def test_a_failed_run_says_which_files_failed_and_why_in_one_line() -> None:
    broken = {f"designs/a/broken-{i}.json": b'{"title": "Broken", "screens": [' for i in range(4)}
    summary = run_in_threads(_run(_pipeline({**_corpus(2), **broken})), concurrency=2)

    with pytest.raises(IngestFailed) as failed:
        raise_for_outcome(summary)

    message = str(failed.value)  # the flow run's state message: what --watch and the UI show
    assert message.startswith("4 of 6 files failed: designs/a/broken-0.json (permanent: ")
    assert "invalid JSON" in message and "\n" not in message
    assert "designs/a/broken-2.json" in message and "broken-3.json" not in message
    assert message.endswith("; and 1 more; `tidal failed` lists them")


def test_every_finished_run_is_on_the_ledger_and_status_shows_it() -> None:
    from datetime import UTC, datetime, timedelta

    from tidal.store import IndexStatus

    files = _corpus(4)
    pipeline = _pipeline(files)
    run_in_threads(_run(pipeline), concurrency=2)
    del pipeline.source.files["prds/note-0002.md"]  # type: ignore[attr-defined]
    run_in_threads(_run(pipeline), concurrency=2)

    first, second = pipeline.store.runs  # type: ignore[attr-defined]
    assert (first.outcome, first.counts["ingested"], first.deleted) == ("completed", 4, 0)
    assert (second.outcome, second.counts["skipped"], second.deleted) == ("completed", 3, 1)
    assert second.flow_run_id is None  # driven without Prefect
    status = IndexStatus(files=3, chunks=3, failed=0, last_run=second, last_success=second)
    text = status.render(now=second.finished_at + timedelta(minutes=5))
    assert "last run: completed " in text and "(5 min ago)" in text
    assert "3 files: ingested 0, skipped 3, failed 0, deleted 1" in text
    assert "no Prefect flow run" in text
    assert second.finished_at.tzinfo is UTC or second.finished_at.utcoffset() == timedelta(0)
    assert datetime.now(UTC) >= second.finished_at >= first.finished_at
