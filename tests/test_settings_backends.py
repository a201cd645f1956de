"""Settings for the production path: Supabase Storage, OpenAI, their credentials."""

from __future__ import annotations

import pytest

from tidal.errors import ConfigError
from tidal.settings import SupabaseLocation, load_settings


@pytest.mark.parametrize(
    ("uri", "bucket", "prefixes"),
    [
        ("supabase://knowledge", "knowledge", ("",)),
        ("supabase://knowledge/", "knowledge", ("",)),
        ("supabase://knowledge/designs", "knowledge", ("designs",)),
        ("supabase://knowledge/designs/, prds", "knowledge", ("designs/", "prds")),
        ("supabase://knowledge/designs/Aurora_team", "knowledge", ("designs/Aurora_team",)),
    ],
)
def test_supabase_source_uris(uri: str, bucket: str, prefixes: tuple[str, ...]) -> None:
    assert SupabaseLocation.parse(uri) == SupabaseLocation(bucket, prefixes)


def test_prefixes_become_folders_in_the_source() -> None:
    from tidal.sources.supabase import SupabaseSource

    location = SupabaseLocation.parse("supabase://knowledge/designs/, prds,prds/,designs/Aurora")
    source = SupabaseSource(
        "http://127.0.0.1:9", "sb_secret_test", location.bucket, location.prefixes
    )
    assert source.prefixes == ["designs/", "prds/"]  # folders; nested and repeated ones dropped
    assert source.covers("prds/a.md") and not source.covers("prds-old/a.md")


def test_a_supabase_source_needs_its_url_and_service_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_SOURCE", "supabase://knowledge")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are not set" in str(err.value)

    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-role-secret")
    settings = load_settings()
    assert settings.supabase_location == SupabaseLocation("knowledge", ("",))
    assert "service-role-secret" not in repr(settings) + str(settings.describe())


def test_supabase_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "abc.supabase.co")
    with pytest.raises(ConfigError, match="SUPABASE_URL: must be an http"):
        load_settings()


def test_openai_needs_a_key_and_takes_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="parameter embedder=openai needs OPENAI_API_KEY"):
        load_settings(embedder="openai")
    monkeypatch.setenv("TIDAL_EMBEDDER", "openai")
    with pytest.raises(ConfigError, match="TIDAL_EMBEDDER=openai needs OPENAI_API_KEY"):
        load_settings()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    settings = load_settings(embedder="openai")
    assert settings.effective_model == "text-embedding-3-small"
    assert (settings.effective_chunk_tokens, settings.effective_chunk_overlap) == (512, 64)
    assert (settings.openai_rpm, settings.openai_tpm) == (3000, 1_000_000)
    assert "sk-secret-value" not in repr(settings) + str(settings.describe())


def test_rate_budget_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_OPENAI_RPM", "0")
    with pytest.raises(ConfigError, match="TIDAL_OPENAI_RPM = '0'"):
        load_settings()
    monkeypatch.setenv("TIDAL_OPENAI_RPM", "500")
    monkeypatch.setenv("TIDAL_OPENAI_TPM", "200000")
    settings = load_settings()
    assert (settings.openai_rpm, settings.openai_tpm) == (500, 200_000)
