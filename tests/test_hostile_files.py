"""A folder as a hostile user or a careless machine leaves it: unreadable folders and files,
FIFOs, sockets, link loops, links out of the folder, names that are not UTF-8, files of other
types, absurdly nested JSON. Nothing may be deleted by mistake, no entry may abort or hang the
run, and every good file lands.

Tests that need an unreadable entry run their part in a subprocess without root's override
rights (``setpriv --bounding-set=-dac_override,-dac_read_search``): as root, ``chmod 000``
stops nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.flowkit import chunks_by_path, file_rows, run
from tidal.records import RunSummary
from tidal.settings import REPO_ROOT
from tidal.sources.local import LocalSource

GOOD = {
    "prds/a.md": "# A\n\nThe first good document.\n",
    "prds/b.txt": "The second good document, in plain text.\n",
    "designs/T_team/c.json": '{"title": "C", "summary": "The third good document."}',
}


def _corpus(root: Path) -> Path:
    for rel, text in GOOD.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _hostile(root: Path) -> dict[str, str]:
    """Add one of each odd entry; returns path -> the words its ignore reason must contain."""
    prds = root / "prds"
    os.mkfifo(prds / "pipe.md")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(prds / "sock.md"))  # stays on disk after the socket closes
    server.close()
    os.symlink("loop-b.md", prds / "loop-a.md")
    os.symlink("loop-a.md", prds / "loop-b.md")
    (root.parent / "outside.md").write_text("# Outside\n\nNot ours.\n")
    os.symlink(root.parent / "outside.md", prds / "escape.md")
    (prds / "diagram.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    os.close(os.open(os.fsencode(prds) + b"/caf\xe9.md", os.O_CREAT | os.O_WRONLY, 0o644))
    return {
        "prds/pipe.md": "FIFO",
        "prds/sock.md": "socket",
        "prds/loop-a.md": "loop",
        "prds/loop-b.md": "loop",
        "prds/escape.md": "outside",
        "prds/diagram.png": "file type .png is not ingested",
        "prds/caf\\xe9.md": "not valid UTF-8",
    }


def test_odd_entries_are_listed_as_ignored_with_their_reason(tmp_path: Path) -> None:
    root = _corpus(tmp_path / "corpus")
    reasons = _hostile(root)
    listed = {f.path: f for f in LocalSource(root).list()}  # a FIFO would block here

    assert {p for p, f in listed.items() if not f.ignored} == set(GOOD) | {"prds/diagram.png"}
    for path, words in reasons.items():
        if path.endswith(".png"):
            continue  # a file type is the run's decision, not the source's
        assert words in (listed[path].ignored or ""), (path, listed[path])


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_over_hostile_entries_lands_every_good_file_and_fails_none(
    tmp_path: Path, env: str
) -> None:
    root = _corpus(tmp_path / "corpus")
    reasons = _hostile(root)
    deep = root / "designs" / "T_team" / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000)

    state, summary = run(root)

    assert state.is_failed()  # deep.json claims to be JSON and is broken: a failure, alone
    summary = summary.summary
    assert isinstance(summary, RunSummary)
    by_path = {r.path: r for r in summary.results}
    assert {p for p, r in by_path.items() if r.status == "ingested"} == set(GOOD)
    assert set(chunks_by_path(env)) == set(GOOD)
    [failed] = summary.failed
    assert failed.path == "designs/T_team/deep.json"
    assert (
        failed.error == "JSON nested too deeply to read (hundreds of levels of objects or arrays)"
    )
    for path, words in reasons.items():
        assert by_path[path].status == "ignored" and words in (by_path[path].error or "")
    assert summary.counts["ignored"] == len(reasons)
    assert set(file_rows(env)) == set(GOOD) | {"designs/T_team/deep.json"}  # none recorded
    for path in reasons:
        assert path not in file_rows(env)


_AS_A_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {root!r})
    from tidal.chunking import ChunkingOptions
    from tidal.embedders.hashing import HashEmbedder
    from tidal.errors import SourceError
    from tidal.pipeline import Pipeline
    from tidal.records import SourceFile
    from tidal.run import IngestRun, run_in_threads
    from tidal.sources.local import LocalSource
    from tidal.store.memory import MemoryStore

    store = MemoryStore()
    for path in json.loads(sys.argv[2]):  # what an earlier run indexed
        store.record_failure(path, "old", fingerprint="f", error="", kind="", attempts=1)
    pipeline = Pipeline(source=LocalSource(sys.argv[1]), embedder=HashEmbedder(),
                        store=store, chunking=ChunkingOptions(64, 8))
    try:
        summary = run_in_threads(IngestRun(pipeline), concurrency=2)
    except SourceError as exc:
        print(json.dumps({{"error": str(exc), "stored": sorted(store.stored_paths())}}))
    else:
        print(json.dumps({{"results": {{r.path: [r.status, r.error_kind, r.error]
                                        for r in summary.results}},
                          "deleted": list(summary.deleted)}}))
    """
)


def _run_as_a_user(root: Path, indexed: list[str]) -> dict:  # type: ignore[type-arg]
    import json

    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to drop root's override rights")
    done = subprocess.run(
        [*_AS_A_USER, sys.executable, "-c", _SCRIPT.format(root=str(REPO_ROOT)), str(root)]
        + [json.dumps(indexed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_unreadable_folder_fails_the_listing_and_deletes_nothing(tmp_path: Path) -> None:
    root = _corpus(tmp_path / "corpus")
    locked = root / "prds" / "locked"
    locked.mkdir()
    for i in range(5):
        (locked / f"doc-{i}.md").write_text(f"# Locked {i}\n\nStill here.\n")
    indexed = [*GOOD, *(f"prds/locked/doc-{i}.md" for i in range(5))]
    locked.chmod(0)
    try:
        outcome = _run_as_a_user(root, indexed)
    finally:
        locked.chmod(0o755)

    assert "cannot list" in outcome["error"] and "prds/locked" in outcome["error"]
    assert "nothing was decided or deleted" in outcome["error"]
    assert outcome["stored"] == sorted(indexed)


def test_an_unreadable_file_fails_alone_and_the_rest_land(tmp_path: Path) -> None:
    root = _corpus(tmp_path / "corpus")
    secret = root / "prds" / "secret.md"
    secret.write_text("# Secret\n\nNo one may read this.\n")
    secret.chmod(0)
    try:
        outcome = _run_as_a_user(root, [])
    finally:
        secret.chmod(0o644)

    results = outcome["results"]
    assert {p for p, r in results.items() if r[0] == "ingested"} == set(GOOD)
    status, kind, error = results["prds/secret.md"]
    # not the bytes' fault: the next run tries it again (test_index_truth.py)
    assert (status, kind) == ("failed", "unreadable") and "permission denied" in error
