"""The one settings object, read from the environment (and ``.env``) and validated once.

Tidal's variables - ``TIDAL_*``, and the providers' own names it accepts (``OPENAI_API_KEY``,
``OPENAI_BASE_URL``, ``SUPABASE_URL``, ``SUPABASE_SERVICE_ROLE_KEY``) - are read here and
nowhere else in the package: below this module, code is handed plain values from a
``Settings``. Two places touch the environment for other things: the local embedder sets
Hugging Face's offline defaults (variables those libraries read), and the pipeline cache
(``tidal.runtime``) fingerprints the variables so that a changed environment opens a new
pipeline - it keys on them, and values still come from here.

Each embedder's defaults are in ``tidal.embedders.catalog``; how a bad value is reported is in
``tidal.config_errors``; ``redact_url`` (``tidal.redact``) is re-exported for the code that
names a URL. One module for the ~30 fields so every variable, its default and its check are
found in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tidal import config_errors
from tidal.embedders import catalog
from tidal.embedders.catalog import EmbedderName
from tidal.errors import ConfigError
from tidal.formats import FORMATS, SUPPORTED_EXTENSIONS, describe_supported
from tidal.redact import redact_url

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = (
    REPO_ROOT / "examples" / "corpus"
    if (REPO_ROOT / "examples" / "corpus").is_dir()
    else Path(__file__).resolve().parent / "sample" / "corpus"  # as a wheel installs it
)

TaskRunnerName = Literal["threads", "dask"]


@dataclass(frozen=True)
class SupabaseLocation:
    """``supabase://<bucket>[/<prefix>[,<prefix>...]]``, split into its parts.

    Prefixes are kept as written; ``SupabaseSource`` decides what they mean (folders).
    """

    bucket: str
    prefixes: tuple[str, ...]

    @classmethod
    def parse(cls, uri: str) -> SupabaseLocation:
        rest = uri.removeprefix("supabase://")
        bucket, _, tail = rest.partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} names no bucket; use supabase://<bucket>[/<prefix>]")
        prefixes = tuple(p.strip() for p in tail.split(",") if p.strip())
        return cls(bucket, prefixes or ("",))


def _env(*names: str) -> AliasChoices:
    """Accept a provider's own variable name as well as its TIDAL_-prefixed twin."""
    return AliasChoices(*names, *(f"TIDAL_{n}" for n in names))


class Settings(BaseSettings):
    """Tidal's configuration. Every field is ``TIDAL_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="TIDAL_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    source: str = Field(
        default=str(SAMPLE_CORPUS),
        description="a local folder, or supabase://<bucket>[/<prefix>[,<prefix>...]]",
    )
    source_timeout: float = Field(
        default=30.0, gt=0, description="seconds before a listing or download times out"
    )
    supabase_url: str | None = Field(
        default=None,
        validation_alias=_env("SUPABASE_URL"),
        description="your project's URL, https://<project>.supabase.co",
    )
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("SUPABASE_SERVICE_ROLE_KEY"),
        description="the project's service-role key (Settings → API)",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="a postgresql:// URL; unset uses the embedded Postgres under TIDAL_DATA_DIR",
    )
    database_connections: int = Field(
        default=8,
        ge=2,
        le=256,
        description="the most connections one process opens to Postgres (2-256): a pool shared "
        "by the files in flight, plus one that marks the process alive",
    )
    index_memory_mb: int = Field(
        default=512,
        ge=64,
        le=1_048_576,
        description="the most memory (MB) Postgres may use to build the vector index in one "
        "pass (maintenance_work_mem); past it the build goes on on disk, many times slower",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="a redis:// URL for task results and the shared OpenAI budget",
    )
    embedder: EmbedderName = Field(default="local", description="which embedder: local or openai")
    embedding_model: str | None = Field(
        default=None, description="model name or path; unset uses the embedder's default"
    )
    embedding_dimensions: int | None = Field(
        default=None, ge=1, le=16000, description="output dimensions, for models that accept it"
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("OPENAI_API_KEY"), description="an OpenAI API key"
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=_env("OPENAI_BASE_URL"),
        description="an OpenAI-compatible endpoint, e.g. http://vllm:8000/v1",
    )
    openai_rpm: int = Field(
        default=3000, ge=1, description="embedding requests per minute, shared by every worker"
    )
    openai_tpm: int = Field(
        default=1_000_000, ge=1, description="embedding tokens per minute, shared by every worker"
    )
    openai_window_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="the window TIDAL_OPENAI_RPM and _TPM are counted over (60: per minute)",
    )
    concurrency: int = Field(
        default=None,
        validate_default=True,
        ge=1,
        le=64,
        description="files processed at once (1-64); unset: 16 local, 32 openai",
    )
    task_runner: TaskRunnerName = Field(
        default="threads",
        description="threads (one process) or dask (local processes, or TIDAL_DASK_ADDRESS)",
    )
    dask_address: str | None = Field(
        default=None,
        description="an existing Dask scheduler, tcp://host:8786; unset starts a local cluster",
    )
    dask_workers: int = Field(
        default=2, ge=1, le=256, description="processes of the local Dask cluster (1-256)"
    )
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
    outage_seconds: float = Field(
        default=300.0,
        ge=1,
        le=86400,
        description="how long a run waits out Storage, the embeddings API, Postgres or Redis "
        "not answering before it stops (seconds)",
    )
    extensions: str = Field(
        default=",".join(FORMATS),
        description="the file types to ingest, comma-separated; other files are ignored by name",
    )
    max_file_mb: float = Field(
        default=10.0,
        gt=0,
        description="the largest file to ingest, in MB; bigger ones are ignored before download",
    )
    max_delete_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="the largest share of the index one run may delete (0-1) without force",
    )
    force_delete: bool = Field(
        default=False, description="true to delete past TIDAL_MAX_DELETE_SHARE, once"
    )
    data_dir: Path = Field(
        default=Path(".tidal"), description="where the embedded Postgres and the run reports live"
    )
    prefect_server: Literal["background", "temporary"] = Field(
        default="background",
        description=(
            "with no PREFECT_API_URL: background keeps one local Prefect server running for the "
            "next run (`tidal server stop`); temporary starts and stops one per run"
        ),
    )

    @property
    def source_identity(self) -> str:
        """What a file's identity holds besides its path: the bucket (``supabase://<bucket>``;
        its prefixes are parts of one namespace), or the folder."""
        location = self.supabase_location
        if location is not None:
            return f"supabase://{location.bucket}"
        return str(Path(self.source).resolve())

    @property
    def source_uri(self) -> str:
        """The source as runs name it (a local folder resolved), for the ledger."""
        if self.source.startswith("supabase://"):
            return self.source
        return str(Path(self.source).resolve())

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str) -> str:
        if value.startswith("supabase://"):
            SupabaseLocation.parse(value)
            return value
        if "://" in value:
            raise ValueError(
                f"unsupported source scheme in {value!r}; give a local folder or supabase://<bucket>"
            )
        if not Path(value).is_dir():
            raise ValueError(f"{value!r} is not a folder; give the folder of files to ingest")
        return value

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency_for_the_embedder(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return catalog.defaults(info.data.get("embedder", "local")).concurrency
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

    @field_validator("supabase_url", "openai_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _credentials_for_the_chosen_backends(self) -> Settings:
        if self.source.startswith("supabase://"):
            missing = [
                name
                for name, value in (
                    ("SUPABASE_URL", self.supabase_url),
                    ("SUPABASE_SERVICE_ROLE_KEY", self.supabase_service_role_key),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"TIDAL_SOURCE is a Supabase bucket but {' and '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not set; set "
                    f"{'it' if len(missing) == 1 else 'them'} from the project's "
                    "Settings → API page"
                )
        if self.embedder == "openai" and self.openai_api_key is None:
            raise ValueError(
                "TIDAL_EMBEDDER=openai needs OPENAI_API_KEY (any non-empty value for a local "
                "OpenAI-compatible server set in OPENAI_BASE_URL)"
            )
        return self

    @field_validator("extensions")
    @classmethod
    def _known_extensions(cls, value: str) -> str:
        given = [e.strip().lower() for e in value.split(",") if e.strip()]
        unknown = [e for e in given if e not in SUPPORTED_EXTENSIONS]
        if not given or unknown:
            raise ValueError(
                f"{', '.join(unknown) or 'no extension'}: Tidal parses only {describe_supported()}"
            )
        return ",".join(given)

    @field_validator("dask_address")
    @classmethod
    def _dask_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("tcp", "tls", "ws", "wss"):
            raise ValueError("must be a Dask scheduler address such as tcp://scheduler:8786")
        return value

    @model_validator(mode="after")
    def _a_cluster_needs_shared_services(self) -> Settings:
        if self.task_runner == "dask" and self.dask_address and self.database_url is None:
            raise ValueError(
                "TIDAL_DASK_ADDRESS sends files to other machines, which cannot reach the "
                "embedded Postgres; set TIDAL_DATABASE_URL to a Postgres every worker can reach"
            )
        return self

    @model_validator(mode="after")
    def _dimensions_only_for_a_model_that_takes_them(self) -> Settings:
        if self.embedder == "local" and self.embedding_dimensions is not None:
            raise ValueError(
                f"TIDAL_EMBEDDING_DIMENSIONS ({self.embedding_dimensions}) shortens the vectors "
                "of OpenAI models that take `dimensions`; the local model's width is its own: "
                "unset it, or set TIDAL_EMBEDDER=openai"
            )
        return self

    @model_validator(mode="after")
    def _overlap_below_half_a_chunk(self) -> Settings:
        if self.effective_chunk_overlap * 2 >= self.effective_chunk_tokens:
            raise ValueError(
                f"TIDAL_CHUNK_OVERLAP ({self.effective_chunk_overlap}) must be under half of "
                f"TIDAL_CHUNK_TOKENS ({self.effective_chunk_tokens})"
            )
        return self

    @property
    def accepted_extensions(self) -> frozenset[str]:
        return frozenset(self.extensions.split(","))

    @property
    def effective_model(self) -> str:
        return self.embedding_model or catalog.defaults(self.embedder).model

    @property
    def effective_chunk_tokens(self) -> int:
        return self.chunk_tokens or catalog.defaults(self.embedder).chunk_tokens

    @property
    def effective_chunk_overlap(self) -> int:
        if self.chunk_overlap is not None:
            return self.chunk_overlap
        return min(catalog.defaults(self.embedder).chunk_overlap, self.effective_chunk_tokens // 4)

    @property
    def supabase_location(self) -> SupabaseLocation | None:
        if not self.source.startswith("supabase://"):
            return None
        return SupabaseLocation.parse(self.source)

    def describe(self) -> dict[str, str]:
        """Settings fit to print or log: secrets masked."""
        return {
            "source": self.source,
            "database": redact_url(self.database_url) if self.database_url else "embedded",
            "results": redact_url(self.redis_url) if self.redis_url else "not persisted",
            "embedder": f"{self.embedder}:{self.effective_model}"
            + (f" via {redact_url(self.openai_base_url)}" if self.openai_base_url else ""),
            "chunking": f"{self.effective_chunk_tokens}/{self.effective_chunk_overlap} tokens",
            "concurrency": str(self.concurrency),
            "task runner": self._runner(),
        }

    def _runner(self) -> str:
        if self.task_runner == "threads":
            return "threads"
        if self.dask_address:
            return f"dask at {self.dask_address}"
        return f"dask, local cluster of {self.dask_workers} processes"


def load_settings(
    *, origin: Mapping[str, str] | None = None, exact: bool = False, **overrides: Any
) -> Settings:
    """Settings from the environment, with non-None ``overrides`` taking precedence (every
    override, None included, with ``exact``).

    A bad value raises ConfigError naming where the user set it, what was wrong and what to set:
    the variable (``TIDAL_SOURCE``) for a value from the environment, ``parameter source`` for
    an override, since overrides are what a flow run or command was given. ``origin`` renames
    an override whose parameter is spelled differently (``{"task_runner": "parameter
    task_runner_name"}``).
    """
    given = {k: v for k, v in overrides.items() if exact or v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        names = {field: f"parameter {field}" for field in given} | dict(origin or {})
        raise ConfigError(config_errors.explain(exc, Settings, names)) from None


def env_name(field: str) -> str:
    """The environment variable a settings field is read from."""
    return config_errors.env_name(Settings, field)


__all__ = [
    "REPO_ROOT",
    "SAMPLE_CORPUS",
    "EmbedderName",
    "Settings",
    "SupabaseLocation",
    "TaskRunnerName",
    "env_name",
    "load_settings",
    "redact_url",
]
