"""The schema as users and Supabase see it: the shipped SQL, `tidal db init`, RLS."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from flows.cli import main
from tidal.settings import REPO_ROOT
from tidal.store.postgres import schema_sql


def test_the_shipped_supabase_migration_is_the_generated_schema() -> None:
    shipped = (REPO_ROOT / "sql" / "tidal-1536.sql").read_text()
    body = "".join(shipped.splitlines(keepends=True)[2:])  # after the two-line header
    assert body == schema_sql(1536)
    assert "vector(1536)" in shipped and "__DIMENSION__" not in shipped


def test_db_init_applies_it_idempotently(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDAL_DATABASE_URL", database_url)
    assert main(["db", "init", "--dimension", "1536"]) == 0
    assert main(["db", "init", "--dimension", "1536"]) == 0
    assert "schema ready" in capsys.readouterr().out
    with psycopg.connect(database_url) as conn:
        (typmod,) = conn.execute(
            "select atttypmod from pg_attribute"
            " where attrelid = 'documents'::regclass and attname = 'embedding'"
        ).fetchone()
        (method,) = conn.execute(
            "select am.amname from pg_index i join pg_class c on c.oid = i.indexrelid"
            " join pg_am am on am.oid = c.relam where c.relname = 'documents_embedding_idx'"
        ).fetchone()
        rls = dict(
            conn.execute(
                "select relname, relrowsecurity from pg_class"
                " where relname in ('documents', 'ingested_files')"
            ).fetchall()
        )
    assert (typmod, method) == (1536, "hnsw")
    assert rls == {"documents": True, "ingested_files": True}


def test_db_init_refuses_another_dimension(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDAL_DATABASE_URL", database_url)
    assert main(["db", "init", "--dimension", "1536"]) == 0
    assert main(["db", "init", "--dimension", "384"]) == 2
    assert "1536-dimension vectors but the embedder makes 384" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("dimension", "says"),
    [
        ("3072", "vectors of 3072 dimensions: pgvector's HNSW index takes at most 2000; "
                 "set TIDAL_EMBEDDING_DIMENSIONS to 2000 or fewer"),
        ("0", "vectors of 0 dimensions: a vector has at least 1"),
    ],
)  # fmt: skip
def test_a_width_the_index_cannot_hold_is_refused_before_any_sql(
    dimension: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "sql", "--dimension", dimension]) == 2
    captured = capsys.readouterr()
    assert says in captured.err and captured.out == ""


def test_a_store_of_vectors_too_wide_to_index_refuses_to_open(database_url: str) -> None:
    """text-embedding-3-large's 3072 dimensions: refused as the run opens its store, before
    anything is embedded, not when the index is built at its end."""
    from tidal.errors import ConfigError
    from tidal.store.postgres import PostgresStore

    with pytest.raises(ConfigError, match="TIDAL_EMBEDDING_DIMENSIONS"):
        PostgresStore(database_url, dimension=3072)
    with psycopg.connect(database_url) as conn:  # and it created nothing
        assert conn.execute("select to_regclass('documents')").fetchone() == (None,)


def test_the_anon_role_reads_nothing_even_when_granted(database_url: str) -> None:
    """Supabase's Data API runs as `anon`: RLS without policies leaves it no rows."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(schema_sql(3))
        register_vector(conn)
        conn.execute(
            "insert into documents (id, content, metadata, embedding, source_path,"
            " chunk_index, chunk_hash) values (gen_random_uuid(), 'secret roadmap', '{}',"
            " %s, 'prds/a.md', 0, 'h')",
            (np.array([1, 0, 0], dtype=np.float32),),
        )
        conn.execute(
            "do $$ begin if not exists (select from pg_roles where rolname = 'anon')"
            " then create role anon nologin; end if; end $$"
        )
        conn.execute("grant select on documents to anon")
        conn.execute("grant execute on function match_documents to anon")
        (as_owner,) = conn.execute("select count(*) from documents").fetchone()
        conn.execute("set role anon")
        (as_anon,) = conn.execute("select count(*) from documents").fetchone()
        matches = conn.execute(
            "select * from match_documents(%s, 5)", (np.array([1, 0, 0], dtype=np.float32),)
        ).fetchall()
        conn.execute("reset role")
    assert (as_owner, as_anon, matches) == (1, 0, [])
