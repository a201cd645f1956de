"""The one settings object, read from ``TIDAL_*`` variables (and ``.env``) and validated once.

Nothing below this module reads the environment: stages get plain values from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tidal.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = REPO_ROOT / "examples" / "corpus"

EmbedderName = Literal["local"]

# Chunk sizes that fit each embedder's input limit, in cl100k_base tokens.
# all-MiniLM-L6-v2 truncates at 256 word pieces; design JSON turns into key paths that cost
# up to ~1.6 word pieces per cl100k token, so 160 tokens stays under the limit with room.
EMBEDDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {"model": "all-MiniLM-L6-v2", "chunk_tokens": 160, "chunk_overlap": 24},
}


class Settings(BaseSettings):
    """Tidal's configuration. Every field is ``TIDAL_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="TIDAL_", env_file=".env", extra="ignore", frozen=True
    )

    source: str = Field(
        default=str(SAMPLE_CORPUS),
        description="a local folder to ingest",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="a postgresql:// URL; unset uses the embedded Postgres under TIDAL_DATA_DIR",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="a redis:// URL for task results; unset keeps them under TIDAL_DATA_DIR",
    )
    embedder: EmbedderName = Field(default="local", description="which embedder: local")
    embedding_model: str | None = Field(
        default=None, description="model name or path; unset uses the embedder's default"
    )
    concurrency: int = Field(default=2, ge=1, le=64, description="files processed at once (1-64)")
    chunk_tokens: int | None = Field(
        default=None, ge=16, le=8191, description="tokens per chunk (16-8191)"
    )
    chunk_overlap: int | None = Field(
        default=None, ge=0, description="tokens shared by neighbouring chunks (under half a chunk)"
    )
    embed_batch_size: int = Field(default=64, ge=1, le=2048, description="chunks per embed call")
    retries: int = Field(
        default=3, ge=0, le=10, description="retries of a transient failure (0-10)"
    )
    retry_delay_seconds: float = Field(
        default=2.0, ge=0, description="first retry delay; doubles on each retry"
    )
    data_dir: Path = Field(
        default=Path(".tidal"), description="where the embedded Postgres and local results live"
    )

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str) -> str:
        if "://" in value:
            raise ValueError(f"unsupported source scheme in {value!r}; give a local folder")
        if not Path(value).is_dir():
            raise ValueError(f"{value!r} is not a folder; give the folder of files to ingest")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in (
            "postgres",
            "postgresql",
        ):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in (
            "redis",
            "rediss",
        ):
            raise ValueError("must start with redis:// or rediss://")
        return value

    @model_validator(mode="after")
    def _overlap_below_half_a_chunk(self) -> Settings:
        if self.effective_chunk_overlap * 2 >= self.effective_chunk_tokens:
            raise ValueError(
                f"TIDAL_CHUNK_OVERLAP ({self.effective_chunk_overlap}) must be under half of "
                f"TIDAL_CHUNK_TOKENS ({self.effective_chunk_tokens})"
            )
        return self

    @property
    def effective_model(self) -> str:
        return self.embedding_model or EMBEDDER_DEFAULTS[self.embedder]["model"]

    @property
    def effective_chunk_tokens(self) -> int:
        return self.chunk_tokens or EMBEDDER_DEFAULTS[self.embedder]["chunk_tokens"]

    @property
    def effective_chunk_overlap(self) -> int:
        if self.chunk_overlap is not None:
            return self.chunk_overlap
        return min(
            EMBEDDER_DEFAULTS[self.embedder]["chunk_overlap"], self.effective_chunk_tokens // 4
        )

    def describe(self) -> dict[str, str]:
        """Settings fit to print or log: secrets masked."""
        return {
            "source": self.source,
            "database": redact_url(self.database_url) if self.database_url else "embedded",
            "results": redact_url(self.redis_url) if self.redis_url else "local files",
            "embedder": f"{self.embedder}:{self.effective_model}",
            "chunking": f"{self.effective_chunk_tokens}/{self.effective_chunk_overlap} tokens",
            "concurrency": str(self.concurrency),
        }


def redact_url(url: SecretStr | str) -> str:
    """The URL with any password replaced, safe for logs."""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    parts = urlsplit(raw)
    if parts.password is None:
        return raw
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with non-None ``overrides`` taking precedence.

    A bad value raises ConfigError naming each variable, what was wrong, and what to set.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        variable = f"TIDAL_{name.upper()}" if name else "settings"
        field = Settings.model_fields.get(name)
        hint = f" (expected {field.description})" if field and field.description else ""
        given = err.get("input")
        shown = "" if name.endswith("_url") or isinstance(given, dict) else f" = {given!r}"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {variable}{shown}: {message}{hint}")
    return "\n".join(lines)
