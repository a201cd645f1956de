"""What the Dask tests share: the fake OpenAI key, the run as a user starts it, and the check
that every file landed once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

from tests.flowkit import chunks_by_path, file_rows
from tidal.settings import REPO_ROOT

OPENAI_KEY = "sk-dask-test-key-never-logged"


def assert_every_file_once(database_url: str, texts: dict[str, str]) -> None:
    """Each file one chunk, ingested, with its text: none missing, none twice."""
    assert chunks_by_path(database_url) == dict.fromkeys(texts, 1)
    assert {p: row[0] for p, row in file_rows(database_url).items()} == dict.fromkeys(
        texts, "ingested"
    )
    with psycopg.connect(database_url) as conn:
        stored = dict(conn.execute("select source_path, content from documents").fetchall())
    assert stored == texts


def start_ingest(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """``python flows/ingest.py`` in ``cwd`` with exactly ``env``, its output in one stream."""
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "flows" / "ingest.py")],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
