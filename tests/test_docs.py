"""Every command the README and docs/ show is run by a named test, or says why it cannot be
run here. A command added to a document without either fails this test; a test renamed or
removed out from under a command fails it too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tidal.settings import REPO_ROOT

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]

RUN_BY = "run by"
NOT_RUN = "not run here"
RULES: list[tuple[str, str, str]] = [
    # (pattern over the command, RUN_BY or NOT_RUN, the test that runs it or the reason)
    (r"^python3 -m venv \.venv && \.venv/bin/pip install -e \. && \.venv/bin/python flows/ingest\.py$",  # noqa: E501
     RUN_BY, "tests/test_main.py::test_the_main_job_ingests_the_sample_corpus_with_no_configuration"),  # noqa: E501
    (r"^bash scripts/test\.sh( .*)?$", RUN_BY, ".ci/run"),
    (r"^\.venv/bin/pip install -e '\.\[dask\]'$", RUN_BY, ".ci/run"),  # [test] includes [dask]
    (r"^export ", NOT_RUN, "sets the reader's own services and keys for the commands after it"),
    (r"^\.venv/bin/tidal search ", RUN_BY,
     "tests/test_main.py::test_search_finds_the_document_written_for_the_question"),
    (r"^\.venv/bin/tidal db init$", RUN_BY, "tests/test_schema.py::test_db_init_applies_it_idempotently"),  # noqa: E501
    (r"^\.venv/bin/tidal ingest( \[PATH\.\.\.\] \[--dry-run\] \[--force-delete\] \[-v\])?$", RUN_BY,
     "tests/test_sync.py::test_the_mass_delete_guard_refuses_then_force_deletes"),
    (r"^TIDAL_TASK_RUNNER=dask TIDAL_DASK_WORKERS=2 \.venv/bin/tidal ingest$", RUN_BY,
     "tests/test_dask.py::test_a_dask_run_lands_every_file_once_within_the_shared_budget"),
    (r"^\.venv/bin/tidal plan$", RUN_BY,
     "tests/test_sync.py::test_the_dry_run_matches_the_following_real_run"),
    (r"^\.venv/bin/tidal status$", RUN_BY,
     "tests/test_operate.py::test_status_reads_the_ledger_and_a_dry_run_is_never_the_latest_sync"),
    (r"^\.venv/bin/tidal (failed|retry)( .*)?$", RUN_BY,
     "tests/test_sync.py::test_tidal_retry_runs_every_failed_file_and_nothing_else"),
    (r"^\.venv/bin/tidal server ", RUN_BY,
     "tests/test_local_server.py::test_ad_hoc_runs_report_to_one_server_that_outlives_them"),
    (r"^(TIDAL_PREFECT_PORT=\d+ )?bash scripts/stack\.sh( stop)?$", RUN_BY,
     "tests/test_deployment.py::test_prefect_deployment_run_ingests_and_the_deployment_is_scheduled_daily"),
    (r"^(PREFECT_API_URL=\S+ )?\.venv/bin/prefect deployment run tidal/ingest .*--watch$", RUN_BY,
     "tests/test_deployment.py::test_prefect_deployment_run_ingests_and_the_deployment_is_scheduled_daily"),
    (r"^\.venv/bin/prefect deployment schedule (ls|pause|resume) tidal/ingest", RUN_BY,
     "tests/test_deployment.py::test_the_schedule_pauses_and_resumes_as_the_docs_say"),
    (r"^\.venv/bin/prefect artifact inspect ", NOT_RUN,
     "Prefect's own command; the artifacts it prints are read through Prefect's client in "
     "tests/test_operate.py::test_a_run_publishes_progress_a_file_table_a_summary_and_a_csv"),
    (r"^docker compose ", NOT_RUN, "no Docker on these machines"),
    (r"^redis-cli ", NOT_RUN, "inspects a production Redis"),
]  # fmt: skip


def _commands() -> list[tuple[str, str]]:
    """(document, command) for every command line in a ``sh`` block, continuations joined."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for block in re.findall(r"```(?:sh|bash)\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split("  #")[0].strip()
                if command and not command.startswith("#"):
                    found.append((document.relative_to(REPO_ROOT).as_posix(), command))
    return found


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_the_documents_show_commands() -> None:
    assert len(_commands()) > 20  # the extraction finds the blocks


@pytest.mark.parametrize(("document", "command"), _commands())
def test_every_command_shown_is_run_by_a_test_or_says_why_not(document: str, command: str) -> None:
    rules = [(kind, where) for pattern, kind, where in RULES if re.search(pattern, command)]
    assert rules, f"{document}: no test runs `{command}` and no reason says why; add a rule"
    kind, where = rules[0]
    if kind == RUN_BY and "::" in where:
        file, name = where.split("::")
        assert name in _tests_in(REPO_ROOT / file), f"{where} is gone; `{command}` needs a test"
    elif kind == RUN_BY:
        assert (REPO_ROOT / where).is_file()
