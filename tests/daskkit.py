"""What the Dask tests share: the fake OpenAI key and the check that every file landed once."""

from __future__ import annotations

import psycopg

from tests.flowkit import chunks_by_path, file_rows

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
