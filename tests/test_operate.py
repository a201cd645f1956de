"""What a user sees of a run: artifacts in Prefect, ``tidal status``, the CSV report, and no
secrets in any log line. Real flow under Prefect's test harness, real Postgres, real model."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from tests.flowkit import run

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _artifacts(flow_run_id) -> dict:  # type: ignore[no-untyped-def]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def test_a_run_publishes_progress_a_file_table_a_summary_and_a_csv(
    corpus: Path, env: str, tmp_path: Path
) -> None:
    import json

    (corpus / "prds" / "broken.md").write_bytes(b"\x00\x01binary")
    state, outcome = run(corpus)
    summary = outcome.summary

    artifacts = _artifacts(state.state_details.flow_run_id)
    assert set(artifacts) >= {"tidal-progress", "tidal-files", "tidal-summary"}
    assert float(artifacts["tidal-progress"].data) == 100.0
    table = artifacts["tidal-files"].data
    rows = json.loads(table) if isinstance(table, str) else table
    # failed files first, then the rest in path order
    assert rows[0]["path"] == "prds/broken.md"
    assert rows[0]["status"] == "failed" and "binary" in rows[0]["error"]
    rest = [r.path for r in summary.results if r.status != "failed"]
    assert [r["path"] for r in rows[1:]] == rest
    assert artifacts["tidal-files"].description.startswith("every file, failed")
    assert {r["type"] for r in rows} == {"design", "prd"}
    assert all(r["chunks"] > 0 and r["tokens"] > 0 for r in rows if r["status"] == "ingested")
    markdown = artifacts["tidal-summary"].data
    assert "| 6 | 5 | 0 | 1 |" in markdown and "`prds/broken.md`" in markdown

    [report] = (tmp_path / ".tidal" / "reports").glob("run-*.csv")
    with report.open() as f:
        saved = list(csv.DictReader(f))
    assert [r["path"] for r in saved] == [r.path for r in summary.results]
    assert {r["status"] for r in saved} == {"ingested", "failed"}
    assert str(report) in artifacts["tidal-files"].description


def test_a_large_run_s_table_is_capped_failed_files_first_and_the_csv_has_every_file(
    corpus: Path, env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from prefect.context import FlowRunContext

    import flows.ingest
    import tasks.artifacts

    monkeypatch.setattr(tasks.artifacts, "TABLE_ROWS", 3)
    linked: list[int] = []  # what Prefect still links from task results to states, at the end

    def publish(*args: object) -> None:
        linked.append(len(FlowRunContext.get().run_results))
        tasks.artifacts.publish(*args)

    monkeypatch.setattr(flows.ingest, "publish", publish)
    (corpus / "prds" / "zz-broken.md").write_bytes(b"\x00\x01binary")
    state, outcome = run(corpus)
    assert linked == [0]  # one State per file held for the whole run, at 100,000 files

    files = _artifacts(state.state_details.flow_run_id)["tidal-files"]
    rows = json.loads(files.data) if isinstance(files.data, str) else files.data
    assert [r["path"] for r in rows] == [
        "prds/zz-broken.md",
        *[r.path for r in outcome.summary.results if r.status == "ingested"][:2],
    ]
    total = len(outcome.summary.results)
    assert files.description.startswith(f"the first 3 of {total} files")
    [report] = (tmp_path / ".tidal" / "reports").glob("run-*.csv")
    with report.open() as f:
        assert len(list(csv.DictReader(f))) == total


def test_status_reads_the_ledger_and_a_dry_run_is_never_the_latest_sync(
    corpus: Path, env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import main

    assert main(["status"]) == 1
    assert "no index yet" in capsys.readouterr().out
    run(corpus)
    (corpus / "designs" / "Delta_team").mkdir(parents=True)
    (corpus / "designs" / "Delta_team" / "broken.json").write_text("{not json")
    (corpus / "prds" / "referral-program.md").write_text("# Referrals v2\n\nChanged.\n")
    state, _ = run(corpus)
    run(corpus, dry_run=True)  # not a sync: not in the ledger
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example:4200/api")

    assert main(["status"]) == 0

    out = capsys.readouterr().out
    assert "index: 5 files, " in out and "1 failed (`tidal failed`)" in out
    assert "last run: failed " in out
    assert "6 files: ingested 1, skipped 4, failed 1" in out
    assert "1 file(s) failed; `tidal failed` lists them" in out
    flow_run_id = state.state_details.flow_run_id
    assert f"http://prefect.example:4200/runs/flow-run/{flow_run_id}" in out
    assert "last successful sync: " in out  # the first run, before the broken file
    with psycopg.connect(env) as conn:
        assert conn.execute("select outcome from ingest_runs order by id").fetchall() == [
            ("completed",),
            ("failed",),
        ]


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_no_secret_reaches_any_log_line(
    form: str,
    corpus: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    password = "pg-pass-w0rd-never-logged"
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    if form == "userinfo":
        with_password = urlunsplit(parts._replace(netloc=f"postgres:{password}@{host}"))
        shown = "postgres:***@"
    else:  # libpq's parameters: postgresql:///db?host=...&user=...&password=...
        with_password = f"{database_url}&user=postgres&password={password}"
        shown = "&password=***"
    monkeypatch.setenv("TIDAL_DATABASE_URL", with_password)  # trust auth ignores the password
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused-key-never-logged")
    caplog.set_level(logging.DEBUG)

    state, summary = run(corpus)

    assert state.is_completed()
    logs = caplog.text + "".join(capfd.readouterr())
    assert shown in logs  # the URL is shown, masked
    assert password not in logs and "sk-unused-key-never-logged" not in logs


def test_an_empty_search_blames_the_index_only_when_it_is_empty(
    corpus: Path, env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from flows.cli import main

    assert main(["search", "how do we handle offline sync?"]) == 0
    assert "the index is empty" in capsys.readouterr().out
    shutil.rmtree(corpus / "designs")  # an index of PRDs only: no design can match
    run(corpus)
    capsys.readouterr()

    assert main(["search", "how do we handle offline sync?", "--type", "design"]) == 0
    assert main(["search", "how do we handle offline sync?", "--team", "Aurora_team"]) == 0
    assert main(["search", "zeppelin", "--mode", "text"]) == 0

    typed, team, text = capsys.readouterr().out.splitlines()
    assert typed.startswith("no results: no chunk of type 'design' (the index holds ")
    assert team.startswith("no results: no chunk of team 'Aurora_team' (the index holds ")
    assert text.startswith("no results: no chunk holds any word of the question (the index ")
    assert "empty" not in typed + team + text
