"""load_settings / Settings: defaults, TIDAL_* variables, overrides, and errors that say what to fix
without ever printing a password."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from tidal.embedders import catalog
from tidal.errors import ConfigError, PermanentError
from tidal.settings import SAMPLE_CORPUS, env_name, load_settings, redact_url

PASSWORD = "s3cr3t-pw"
PG_URL = f"postgresql://tidal:{PASSWORD}@db.internal:5432/tidal"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TIDAL_* variable from the caller's shell, and no stray .env in the working folder."""
    for key in list(os.environ):
        if key.upper().startswith("TIDAL_"):
            monkeypatch.delenv(key, raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def _config_error(**variables) -> ConfigError:
    """The error for these settings set as variables (``TIDAL_<NAME>``), as a user would."""
    with pytest.MonkeyPatch.context() as env, pytest.raises(ConfigError) as info:
        for name, value in variables.items():
            env.setenv(env_name(name), str(value))
        load_settings()
    assert isinstance(info.value, PermanentError)
    return info.value


def _parameter_error(**overrides) -> ConfigError:
    """The error for these settings given as overrides (a flow run's parameters)."""
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    return info.value


# --- defaults --------------------------------------------------------------------------------


def test_with_nothing_set_the_sample_corpus_goes_to_an_embedded_database() -> None:
    """The zero-configuration run: the corpus bundled with the checkout, no database URL (an
    embedded Postgres) and no Redis (results not persisted), as ``describe`` reports them."""
    s = load_settings()
    corpus = Path(__file__).resolve().parent.parent / "examples" / "corpus"
    assert Path(s.source) == corpus and any(corpus.rglob("*.md"))
    described = s.describe()
    assert (described["database"], described["results"]) == ("embedded", "not persisted")


@pytest.mark.parametrize("embedder", ["local", "openai"])
def test_each_embedders_defaults_come_from_the_catalog(
    monkeypatch: pytest.MonkeyPatch, embedder: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    s = load_settings(embedder=embedder)
    expected = catalog.defaults(embedder)
    assert (s.effective_model, s.effective_chunk_tokens, s.effective_chunk_overlap) == (
        expected.model,
        expected.chunk_tokens,
        expected.chunk_overlap,
    )
    assert s.concurrency == expected.concurrency


def test_the_catalog_prices_only_models_it_knows() -> None:
    assert catalog.PRICE_PER_MILLION_TOKENS == {
        "text-embedding-3-small": 0.02,
        "text-embedding-3-large": 0.13,
        "text-embedding-ada-002": 0.10,
    }
    assert catalog.model("text-embedding-3-large") == catalog.Model(
        "text-embedding-3-large", 3072, 8191, 0.13
    )
    assert catalog.model("bge-small-en") is None
    assert catalog.defaults("openai").model in catalog.MODELS


# --- environment and overrides ---------------------------------------------------------------


def test_env_vars_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    monkeypatch.setenv("TIDAL_SOURCE", str(folder))
    monkeypatch.setenv("TIDAL_CONCURRENCY", "7")
    monkeypatch.setenv("TIDAL_CHUNK_TOKENS", "320")
    monkeypatch.setenv("TIDAL_CHUNK_OVERLAP", "40")
    monkeypatch.setenv("TIDAL_RETRIES", "0")
    monkeypatch.setenv("TIDAL_RETRY_DELAY_SECONDS", "0.25")
    monkeypatch.setenv("TIDAL_EMBED_BATCH_SIZE", "16")
    monkeypatch.setenv("TIDAL_EMBEDDING_MODEL", "/models/minilm")
    monkeypatch.setenv("TIDAL_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TIDAL_DATABASE_URL", PG_URL)
    monkeypatch.setenv("TIDAL_REDIS_URL", "redis://localhost:6379/0")
    s = load_settings()
    assert s.source == str(folder)
    assert s.concurrency == 7
    assert (s.effective_chunk_tokens, s.effective_chunk_overlap) == (320, 40)
    assert s.retries == 0
    assert s.retry_delay_seconds == 0.25
    assert s.embed_batch_size == 16
    assert s.effective_model == "/models/minilm"
    assert s.data_dir == tmp_path / "state"
    assert s.database_url is not None and s.database_url.get_secret_value() == PG_URL
    assert s.redis_url is not None and s.redis_url.get_secret_value() == "redis://localhost:6379/0"


def test_dotenv_in_working_folder_is_read_and_env_beats_it(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    (clean_env / ".env").write_text("TIDAL_CONCURRENCY=9\nTIDAL_RETRIES=5\n")
    s = load_settings()
    assert (s.concurrency, s.retries) == (9, 5)
    monkeypatch.setenv("TIDAL_CONCURRENCY", "4")
    assert load_settings().concurrency == 4


def test_overrides_beat_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIDAL_CONCURRENCY", "7")
    monkeypatch.setenv("TIDAL_SOURCE", str(SAMPLE_CORPUS))
    monkeypatch.setenv("TIDAL_RETRIES", "5")
    s = load_settings(concurrency=3, source=str(tmp_path))
    assert s.concurrency == 3
    assert s.source == str(tmp_path)
    assert s.retries == 5  # not overridden: still from the environment


def test_none_overrides_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_CONCURRENCY", "7")
    s = load_settings(concurrency=None, source=None, database_url=None, chunk_tokens=None)
    assert s.concurrency == 7
    assert s.source == str(SAMPLE_CORPUS)
    assert s.database_url is None
    assert s.effective_chunk_tokens == 160


def test_invalid_env_value_is_reported_like_an_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_CONCURRENCY", "0")
    assert "TIDAL_CONCURRENCY" in str(_config_error())
    # ...but a valid override replaces the bad variable before validation.
    assert load_settings(concurrency=2).concurrency == 2


@pytest.mark.parametrize(
    ("overrides", "tokens", "overlap"),
    [
        ({"chunk_tokens": 40}, 40, 10),  # default overlap shrinks to a quarter of a small chunk
        ({"chunk_tokens": 512}, 512, 24),
        ({"chunk_overlap": 0}, 160, 0),  # an explicit 0 is honoured, not replaced by the default
        ({"chunk_tokens": 64, "chunk_overlap": 31}, 64, 31),
        ({"chunk_overlap": 79}, 160, 79),
    ],
)
def test_effective_chunking(overrides: dict, tokens: int, overlap: int) -> None:
    s = load_settings(**overrides)
    assert (s.effective_chunk_tokens, s.effective_chunk_overlap) == (tokens, overlap)
    assert s.describe()["chunking"] == f"{tokens}/{overlap} tokens"


# --- invalid values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "variable", "hints"),
    [
        ({"concurrency": 0}, "TIDAL_CONCURRENCY", ["1-64"]),
        ({"concurrency": 65}, "TIDAL_CONCURRENCY", ["1-64"]),
        ({"concurrency": "many"}, "TIDAL_CONCURRENCY", ["'many'", "integer", "1-64"]),
        ({"retries": 11}, "TIDAL_RETRIES", ["0-10"]),
        ({"chunk_tokens": 8}, "TIDAL_CHUNK_TOKENS", ["16-8191"]),
        ({"embedder": "bogus"}, "TIDAL_EMBEDDER", ["'bogus'", "local"]),
        ({"redis_url": "http://cache:6379"}, "TIDAL_REDIS_URL", ["redis://"]),
        ({"database_url": "sqlite:///tidal.db"}, "TIDAL_DATABASE_URL", ["postgresql://"]),
    ],
)
def test_invalid_values_name_the_variable_and_the_fix(
    overrides: dict, variable: str, hints: list[str]
) -> None:
    message = str(_config_error(**overrides))
    assert variable in message
    for hint in hints:
        assert hint in message


def test_dimensions_for_the_local_model_are_refused_not_ignored() -> None:
    message = str(_config_error(embedding_dimensions=256))
    assert "TIDAL_EMBEDDING_DIMENSIONS (256) shortens the vectors of OpenAI models" in message
    assert "unset it, or set TIDAL_EMBEDDER=openai" in message


def test_missing_source_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    message = str(_config_error(source=str(missing)))
    assert "TIDAL_SOURCE" in message
    assert str(missing) in message
    assert "folder" in message


def test_source_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    file = tmp_path / "doc.md"
    file.write_text("# not a folder")
    assert "TIDAL_SOURCE" in str(_config_error(source=str(file)))


def test_source_url_is_rejected() -> None:
    message = str(_config_error(source="s3://bucket/designs"))
    assert "TIDAL_SOURCE" in message
    assert "scheme" in message


def test_source_from_env_pointing_at_missing_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIDAL_SOURCE", str(tmp_path / "gone"))
    assert "TIDAL_SOURCE" in str(_config_error())


@pytest.mark.parametrize(
    "overrides",
    [
        {"chunk_overlap": 80},  # exactly half of the default 160
        {"chunk_overlap": 200},
        {"chunk_tokens": 100, "chunk_overlap": 50},
        {"chunk_tokens": 100, "chunk_overlap": 70},
    ],
)
def test_overlap_must_be_under_half_a_chunk(overrides: dict) -> None:
    message = str(_config_error(**overrides))
    assert "TIDAL_CHUNK_OVERLAP" in message
    assert "TIDAL_CHUNK_TOKENS" in message
    assert "half" in message
    assert str(overrides["chunk_overlap"]) in message


def test_every_invalid_value_is_reported_at_once() -> None:
    message = str(
        _config_error(concurrency=0, retries=99, embedder="bogus", database_connections=1)
    )
    for variable in (
        "TIDAL_CONCURRENCY",
        "TIDAL_RETRIES",
        "TIDAL_EMBEDDER",
        "TIDAL_DATABASE_CONNECTIONS",
    ):
        assert variable in message


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"database_url": f"mysql://tidal:{PASSWORD}@db.internal:3306/tidal"},
        {"database_url": PG_URL, "concurrency": 0},
        {"database_url": PG_URL, "chunk_overlap": 120},
        {"database_url": PG_URL, "source": "/no/such/folder"},
        {"redis_url": f"http://:{PASSWORD}@cache:6379/0"},
        {"redis_url": f"redis://:{PASSWORD}@cache:6379/0", "embedder": "bogus"},
    ],
)
def test_config_error_never_shows_a_password(overrides: dict) -> None:
    err = _config_error(**overrides)
    assert PASSWORD not in str(err)
    assert PASSWORD not in repr(err)
    assert all(PASSWORD not in str(arg) for arg in err.args)


def test_mysql_database_url_is_rejected_without_leaking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_DATABASE_URL", f"mysql://tidal:{PASSWORD}@db.internal/tidal")
    message = str(_config_error())
    assert "TIDAL_DATABASE_URL" in message
    assert "postgresql://" in message
    assert PASSWORD not in message


def test_describe_and_repr_mask_passwords() -> None:
    s = load_settings(database_url=PG_URL, redis_url=f"redis://:{PASSWORD}@cache:6379/0")
    described = s.describe()
    assert described["database"] == "postgresql://tidal:***@db.internal:5432/tidal"
    assert described["results"] == "redis://:***@cache:6379/0"
    assert PASSWORD not in str(described)
    assert PASSWORD not in repr(s)
    assert PASSWORD not in str(s)
    assert PASSWORD not in str(s.model_dump())
    # ...while the real value is still there for the code that connects.
    assert s.database_url is not None and s.database_url.get_secret_value() == PG_URL


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (PG_URL, "postgresql://tidal:***@db.internal:5432/tidal"),
        (f"postgres://u:{PASSWORD}@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"),
        (f"redis://:{PASSWORD}@localhost:6379/0", "redis://:***@localhost:6379/0"),
        (
            f"rediss://default:{PASSWORD}@cache.example:6380",
            "rediss://default:***@cache.example:6380",
        ),
        (f"postgresql://u:{PASSWORD}@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        (
            f"postgresql:///db?host=/run/pg&user=u&password={PASSWORD}&sslmode=off",
            "postgresql:///db?host=/run/pg&user=u&password=***&sslmode=off",
        ),
        (f"postgresql://h/db?PassWord={PASSWORD}", "postgresql://h/db?PassWord=***"),
        (
            f"postgresql://u:{PASSWORD}@h/db?sslpassword={PASSWORD}",
            "postgresql://u:***@h/db?sslpassword=***",
        ),
        (f"redis://localhost:6379/0?password={PASSWORD}", "redis://localhost:6379/0?password=***"),
        (f"postgresql://h/db?pass%77ord={PASSWORD}", "postgresql://h/db?pass%77ord=***"),
    ],
)
def test_redact_url_replaces_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert redact_url(SecretStr(url)) == redacted
    assert PASSWORD not in redact_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tidal@db.internal:5432/tidal",
        "postgresql://db.internal/tidal",
        "postgresql:///tidal?host=/var/run/postgresql",
        "redis://localhost:6379/0",
    ],
)
def test_redact_url_leaves_urls_without_password_unchanged(url: str) -> None:
    assert redact_url(url) == url
    assert redact_url(SecretStr(url)) == url


def test_extensions_are_normalised_and_limited_to_what_tidal_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDAL_EXTENSIONS", " .MD, .json ")
    assert load_settings().accepted_extensions == {".md", ".json"}
    monkeypatch.setenv("TIDAL_EXTENSIONS", ".md,.pptx")
    message = str(_config_error())
    assert "TIDAL_EXTENSIONS" in message and ".pptx: Tidal parses only" in message


def test_concurrency_defaults_per_embedder_and_a_set_value_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDAL_EMBEDDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert load_settings().concurrency == 32  # requests wait on the network, holding no connection
    assert load_settings(concurrency=None).concurrency == 32  # an unset parameter defers
    assert load_settings(concurrency=3).concurrency == 3
    monkeypatch.setenv("TIDAL_CONCURRENCY", "5")
    assert load_settings().concurrency == 5
    assert load_settings(embedder="local").concurrency == 5


def test_a_bad_parameter_is_named_as_the_parameter_the_user_set(tmp_path: Path) -> None:
    missing = tmp_path / "docs"
    message = str(_parameter_error(source=str(missing)))
    assert f"parameter source = '{missing}'" in message and "TIDAL_SOURCE" not in message

    message = str(_parameter_error(chunk_tokens=100, chunk_overlap=50))
    assert "parameter chunk_overlap" in message and "of parameter chunk_tokens" in message

    renamed = _parameter_error(task_runner="fibers", origin={"task_runner": "parameter x_name"})
    assert "parameter x_name = 'fibers'" in str(renamed)


def test_a_bad_variable_beside_a_parameter_is_still_named_as_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDAL_CHUNK_TOKENS", "100")
    message = str(_parameter_error(chunk_overlap=50))
    assert "parameter chunk_overlap (50) must be under half of TIDAL_CHUNK_TOKENS" in message
