"""Pipelines opened once per process and shared by every file that process runs.

A task gets plain data - the file and a ``PipelineSpec`` - and asks ``shared_pipeline`` for
the pipeline. The first call in a process opens the backends (the connection pool, the model);
later calls, from any thread, reuse them. That is what lets one run spread over threads, local
processes or a cluster's machines: nothing live crosses a process boundary, and no secret
travels with the work - each worker reads its own from its environment.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tidal.embedders import Embedder, open_embedder
from tidal.errors import ConfigError
from tidal.pipeline import Pipeline, build_pipeline, chunking_options, fingerprint
from tidal.run import IngestRun
from tidal.settings import Settings, env_name, load_settings
from tidal.sources import open_source

_lock = threading.Lock()
_pipelines: dict[str, Pipeline] = {}
_embedders: dict[str, Embedder] = {}
_resolved: dict[tuple[object, ...], Pipeline] = {}
"""(spec, environment) -> pipeline: the per-file fast path, with no settings to validate."""
_ENV_PREFIXES = ("TIDAL_", "SUPABASE_", "OPENAI_")


@dataclass(frozen=True)
class PipelineSpec:
    """The run's configuration minus its secrets: safe to show in the UI and to pickle.

    ``settings`` holds every non-secret setting the flow resolved, so a worker builds exactly
    the flow's pipeline whatever its own ``TIDAL_*`` variables say; only secrets (database and
    Redis URLs, keys) come from the worker's environment. ``fingerprint`` pins the pipeline the
    flow built: a worker whose secrets lead elsewhere (another model width, say) refuses.
    """

    settings: tuple[tuple[str, Any], ...]
    fingerprint: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> PipelineSpec:
        public = {
            name: str(value) if isinstance(value, Path) else value
            for name, value in settings
            if not isinstance(value, SecretStr)
        }
        public["data_dir"] = str(settings.data_dir.resolve())  # the same folder from any cwd
        return cls(tuple(sorted(public.items())))

    def pinned(self, fingerprint: str) -> PipelineSpec:
        return replace(self, fingerprint=fingerprint)

    def load(self) -> Settings:
        """The settings: these values, with secrets from this process's environment.

        The values are the run's settings, not a user's parameters: an error (a source folder
        this worker lacks) names each by its variable.
        """
        values = dict(self.settings)
        # exact: a setting the flow left unset stays unset, so this worker's own
        # TIDAL_EMBEDDING_MODEL or TIDAL_CHUNK_TOKENS cannot choose another model or chunking.
        origin = {name: env_name(name) for name in values}
        return load_settings(origin=origin, exact=True, **values)


def shared_pipeline(spec: PipelineSpec) -> Pipeline:
    """This process's pipeline for ``spec``, opened on first use.

    Keyed by every resolved setting (secrets included, hashed), so a changed environment never
    gets a pipeline opened for the old one. Validating settings costs milliseconds, more than
    some files take, so a spec seen before in an unchanged environment skips it.
    """
    seen = (spec.settings, _environment())
    pipeline = _resolved.get(seen)
    if pipeline is None:
        settings = spec.load()
        key = _digest(settings)
        with _lock:
            pipeline = _pipelines.get(key)
            if pipeline is None:
                embedder = _embedders.get(embedder_key := _embedder_key(settings))
                if embedder is None:
                    embedder = _embedders[embedder_key] = open_embedder(settings)
                # Before the store opens: its schema check would answer another width with
                # advice to drop the documents table, not that this worker differs from the run.
                _refuse_another(spec, fingerprint(chunking_options(settings), embedder))
                pipeline = _pipelines[key] = build_pipeline(settings, embedder=embedder)
                _close_at_exit()
            _resolved[seen] = pipeline
    _refuse_another(spec, pipeline.fingerprint)
    return pipeline


def _refuse_another(spec: PipelineSpec, built: str) -> None:
    if spec.fingerprint is not None and built != spec.fingerprint:
        raise ConfigError(
            f"this worker builds pipeline {built} but the run's is "
            f"{spec.fingerprint}: give workers the flow's secrets (TIDAL_DATABASE_URL, "
            "OPENAI_API_KEY, ...) and the same model"
        )


def prepare_run(settings: Settings, *, paths: Sequence[str] | None = None) -> IngestRun:
    """The run the settings describe, on this process's shared pipeline, with the source
    listed and every file sorted by what the run must do: where every run starts (the flow,
    an ad hoc run, ``tidal plan``)."""
    run = IngestRun.configured(shared_pipeline(PipelineSpec.of(settings)), settings, paths=paths)
    run.prepare()
    return run


def preflight(settings: Settings) -> None:
    """Check what can be checked in a second, before an orchestrator starts: the source's
    location and credentials (a wrong Supabase key or bucket fails here, naming the variable).
    """
    source = open_source(settings)
    try:
        source.check()
    finally:
        source.close()


def close_shared(*, embedders: bool = False) -> None:
    """Close every shared pipeline (and drop the models too, with ``embedders``)."""
    with _lock:
        pipelines = list(_pipelines.values())
        _pipelines.clear()
        _resolved.clear()
        if embedders:
            _embedders.clear()
    for pipeline in pipelines:
        pipeline.close()


def _close_at_exit() -> None:
    """Close the shared pipelines as the process exits, before whatever their stores opened:
    ``atexit`` runs the newest first, so registered again after each store opened (an embedded
    Postgres registers its own stop then), the pool and the claims' presence connection close
    before the server stops, instead of meeting it stopped and logging a connection error."""
    atexit.unregister(close_shared)
    atexit.register(close_shared)


def _environment() -> tuple[object, ...]:
    """What settings are read from besides the spec: the variables and the ``.env`` file."""
    variables = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    try:
        dotenv = os.stat(".env")
        env_file: tuple[object, ...] = (os.getcwd(), dotenv.st_mtime_ns, dotenv.st_size)
    except OSError:
        env_file = ()
    return variables, env_file


def _embedder_key(settings: Settings) -> str:
    """What decides the embedder: the rest (source, database, chunking) shares one model."""
    return _digest(
        settings,
        include=(
            "embedder",
            "embedding_model",
            "embedding_dimensions",
            "openai_api_key",
            "openai_base_url",
            "openai_rpm",
            "openai_tpm",
            "openai_window_seconds",
            "redis_url",
        ),
    )


def _digest(settings: Settings, *, include: tuple[str, ...] | None = None) -> str:
    values = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in settings
        if include is None or name in include
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
