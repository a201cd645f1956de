"""Incremental sync: changed sections only, deletions under guard, one worker per file,
failed files first, ``tidal failed`` / ``tidal retry``, and a dry run that tells the truth.
Real flow, real Postgres + pgvector, real model."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from tests.flowkit import chunks_by_path, file_rows, run
from tidal.run import DeletionRefused
from tidal.sync import plan_deletions


def test_editing_one_section_re_embeds_only_its_chunks(
    corpus: Path, env: str, embedded: list[str]
) -> None:
    run(corpus, chunk_tokens=48, chunk_overlap=8)
    target = corpus / "prds" / "calendar-export.md"
    text = target.read_text()
    heading = [line for line in text.splitlines() if line.startswith("## ")][1]
    edited = text.replace(heading + "\n", heading + "\n\nEDITED: a brand-new sentence.\n", 1)
    target.write_text(edited)
    section = edited[edited.index(heading) : edited.index("\n## ", edited.index(heading)) + 1]
    before = chunks_by_path(env)["prds/calendar-export.md"]
    embedded.clear()

    state, summary = run(corpus, chunk_tokens=48, chunk_overlap=8)

    [result] = [r for r in summary.results if r.status == "ingested"]
    assert result.path == "prds/calendar-export.md"
    assert any("EDITED" in t for t in embedded)
    contexts, bodies = zip(*(t.split("\n\n", 1) for t in embedded), strict=True)
    assert all(b in section for b in bodies), "only the edited section is re-embedded"
    assert all(c.endswith(heading.removeprefix("## ")) for c in contexts)  # under its heading
    assert len(embedded) < before / 2
    assert result.reused == result.chunks - len(embedded)


def test_removed_files_are_deleted_at_the_end_of_a_full_listing(corpus: Path, env: str) -> None:
    run(corpus)
    (corpus / "prds" / "referral-program.md").unlink()

    state, summary = run(corpus)

    assert state.is_completed()
    assert summary.deleted == ("prds/referral-program.md",)
    assert "prds/referral-program.md" not in chunks_by_path(env)
    assert "prds/referral-program.md" not in file_rows(env)
    assert len(chunks_by_path(env)) == 4


def test_the_mass_delete_guard_refuses_then_force_deletes(
    corpus: Path, env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import ingest as ingest_main

    run(corpus)
    for rel in (
        "prds/referral-program.md",
        "prds/calendar-export.md",
        "prds/analytics-event-taxonomy.txt",
    ):
        (corpus / rel).unlink()

    state, refused = run(corpus)  # 3 of 5 gone: 60 % > 50 %
    assert state.is_failed() and isinstance(refused, DeletionRefused)
    assert "deletion refused: 3 of 5 indexed files" in state.message
    summary = refused.summary
    assert summary.deleted == ()
    assert "3 of 5 indexed files (60%)" in summary.deletion_refused
    assert len(chunks_by_path(env)) == 5
    monkeypatch.setenv("TIDAL_SOURCE", str(corpus))
    assert ingest_main([]) == 3  # what a schedule or a shell script sees
    capsys.readouterr()
    assert ingest_main(["--dry-run"]) == 0  # `tidal ingest --dry-run`: the plan says why
    assert "deletion refused: 3 of 5 indexed files" in capsys.readouterr().out
    assert len(chunks_by_path(env)) == 5

    assert ingest_main(["--force-delete", "-v"]) == 0  # as the README shows it
    out = capsys.readouterr().out
    assert "deleted 3" in out
    assert out.count(" skipped ") >= 2  # -v: the unchanged files are in the table too
    assert len(chunks_by_path(env)) == 2


def test_an_empty_listing_deletes_nothing(corpus: Path, env: str) -> None:
    run(corpus)
    for path in corpus.rglob("*"):
        if path.is_file():
            path.unlink()
    state, refused = run(corpus, force_delete=True)
    assert state.is_failed() and isinstance(refused, DeletionRefused)
    summary = refused.summary
    assert summary.deleted == () and "listed no files" in summary.deletion_refused
    assert len(chunks_by_path(env)) == 5


@pytest.mark.parametrize(
    ("listed", "stored", "share", "force", "deleted", "refused"),
    [
        ({"a", "b"}, {"a", "b", "c"}, 0.5, False, ("c",), None),
        ({"a"}, {"a", "b", "c"}, 0.5, False, (), "2 of 3"),
        ({"a"}, {"a", "b", "c"}, 0.5, True, ("b", "c"), None),
        ({"a"}, {"a", "b", "c"}, 0.7, False, ("b", "c"), None),
        (set(), {"a"}, 1.0, True, (), "listed no files"),
        ({"a"}, {"a"}, 0.5, False, (), None),
    ],
)
def test_plan_deletions(listed, stored, share, force, deleted, refused) -> None:  # type: ignore[no-untyped-def]
    decision = plan_deletions(listed, stored, covers=lambda p: True, max_share=share, force=force)
    assert decision.allowed == deleted
    assert (decision.refused is None) == (refused is None)
    if refused:
        assert refused in decision.refused


def test_deletion_only_touches_what_the_source_covers() -> None:
    decision = plan_deletions(
        ["designs/a.json"],
        ["designs/a.json", "designs/b.json", "prds/c.md", "prds/d.md"],
        covers=lambda p: p.startswith("designs/"),
        max_share=0.5,
    )
    assert decision.allowed == ("designs/b.json",)


def test_two_concurrent_runs_embed_every_file_exactly_once(
    corpus: Path, env: str, embedded: list[str]
) -> None:
    outcomes: list[object] = []

    def one_run() -> None:
        outcomes.append(run(corpus, concurrency=2)[1])

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    stored = chunks_by_path(env)
    with psycopg.connect(env) as conn:
        rows = conn.execute("select content, metadata from documents").fetchall()
    # What was embedded: each chunk under its document's title and its section path.
    texts = {
        "\n".join(filter(None, (m["title"], m.get("section")))) + "\n\n" + content
        for content, m in rows
    }
    assert len(outcomes) == 2
    assert Counter(embedded) == Counter(dict.fromkeys(texts, 1))  # each text once
    assert len(embedded) == sum(stored.values())
    ingested = Counter(r.path for o in outcomes for r in o.results if r.status == "ingested")
    assert sorted(ingested) == sorted(stored) and set(ingested.values()) == {1}


def test_the_dry_run_matches_the_following_real_run(
    corpus: Path,
    env: str,
    embedded: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main as cli_main

    run(corpus)
    (corpus / "prds" / "referral-program.md").write_text("# Referrals v2\n\n## Rules\n\nOne.\n")
    (corpus / "prds" / "new-doc.md").write_text("# New\n\nA brand new document.\n")
    (corpus / "designs" / "Borealis_team" / "route-optimizer.json").unlink()
    embedded.clear()

    _, plan = run(corpus, dry_run=True)
    assert embedded == [] and len(chunks_by_path(env)) == 5  # nothing embedded or written
    monkeypatch.setenv("TIDAL_SOURCE", str(corpus))
    assert cli_main(["plan"]) == 0  # the same run, driven without Prefect
    assert capsys.readouterr().out.startswith(plan.render())
    _, summary = run(corpus)

    assert plan.added == ("prds/new-doc.md",)
    assert plan.changed == ("prds/referral-program.md",)
    assert len(plan.unchanged) == summary.counts["skipped"] == 3
    assert summary.counts["ingested"] == 2
    assert (
        plan.deletion.allowed == summary.deleted == ("designs/Borealis_team/route-optimizer.json",)
    )
    assert plan.chunks == sum(r.chunks for r in summary.results if r.status == "ingested")
    assert plan.chunks_to_embed == len(embedded)
    assert plan.cost_usd is None  # local model: no bill


def test_failed_files_are_listed_retried_first_and_retried_alone(
    corpus: Path,
    env: str,
    reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main

    bad = corpus / "prds" / "zz-broken.md"
    bad.write_bytes(b"# Caf\xc3\x28 not utf-8")
    run(corpus)
    monkeypatch.setenv("TIDAL_DATABASE_URL", env)
    capsys.readouterr()
    assert main(["failed"]) == 1
    out = capsys.readouterr().out
    assert "prds/zz-broken.md  [permanent, 1 attempt(s)" in out and "not valid UTF-8" in out

    bad.write_text("# Fixed\n\nNow readable.\n")
    (corpus / "prds" / "calendar-export.md").write_text("# Calendar v2\n\nChanged too.\n")
    reads.clear()
    state, summary = run(corpus, concurrency=1)
    assert reads[0] == "prds/zz-broken.md"  # failed last time: first in line
    assert summary.counts["failed"] == 0

    bad.write_bytes(b"\x00binary")
    run(corpus)
    (corpus / "prds" / "referral-program.md").write_text(
        "# Referrals v3\n\nChanged, not retried.\n"
    )
    bad.write_text("# Fixed again\n")
    reads.clear()
    state, retried = run(corpus, paths=["prds/zz-broken.md"])
    assert reads == ["prds/zz-broken.md"]
    assert [r.path for r in retried.results] == ["prds/zz-broken.md"]
    assert retried.deleted == ()


def test_split_by_state_tells_new_from_changed() -> None:
    from tidal.records import SourceFile
    from tidal.sync import split_by_state

    files = [SourceFile(p, 1, h) for p, h in (("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"))]
    # a: current; b: new bytes; c: stored under another fingerprint (or failed); d: never seen
    changes = split_by_state(files, {"a": "1", "b": "old"}, {"a", "b", "c"})
    assert [f.path for f in changes.added] == ["d"]
    assert [f.path for f in changes.changed] == ["b", "c"]
    assert [f.path for f in changes.unchanged] == ["a"]
    assert changes.total == 4


def test_tidal_retry_runs_every_failed_file_and_nothing_else(
    corpus: Path,
    env: str,
    reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main

    (corpus / "prds" / "bad-one.md").write_bytes(b"binary\x00data")
    (corpus / "prds" / "bad-two.md").write_bytes(b"caf\xe9 au lait")
    run(corpus)
    (corpus / "prds" / "bad-one.md").write_text("# One\n\nFixed.\n")
    (corpus / "prds" / "bad-two.md").write_text("# Two\n\nFixed.\n")
    (corpus / "prds" / "calendar-export.md").write_text("# Calendar v2\n\nNot a retry.\n")
    monkeypatch.setenv("TIDAL_SOURCE", str(corpus))
    reads.clear()

    assert main(["retry"]) == 0

    assert sorted(reads) == ["prds/bad-one.md", "prds/bad-two.md"]
    assert file_rows(env)["prds/bad-one.md"][0] == "ingested"
    assert main(["failed"]) == 0
    assert "no failed files" in capsys.readouterr().out
