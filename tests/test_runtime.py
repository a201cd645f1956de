"""The per-process pipeline cache and the spec a task carries: no secret travels with the work,
a worker opens its backends once, and a worker that would build another pipeline refuses."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tidal.errors import ConfigError
from tidal.runtime import PipelineSpec, shared_pipeline
from tidal.settings import load_settings

PASSWORD = "pg-secret-never-in-a-spec"


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, database_url: str, corpus: Path) -> str:
    with_password = database_url.replace(
        "postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@"
    )
    monkeypatch.setenv("TIDAL_DATABASE_URL", with_password)  # trust auth ignores the password
    monkeypatch.setenv("TIDAL_SOURCE", str(corpus))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-in-a-spec")
    return with_password


def test_a_spec_carries_every_setting_but_no_secret(configured: str) -> None:
    settings = load_settings(chunk_tokens=96)
    spec = PipelineSpec.of(settings)

    shipped = pickle.dumps(spec)
    assert PASSWORD.encode() not in shipped and b"sk-never-in-a-spec" not in shipped
    assert dict(spec.settings)["chunk_tokens"] == 96
    assert dict(spec.settings)["data_dir"] == str(settings.data_dir.resolve())
    assert pickle.loads(shipped).load() == load_settings(
        chunk_tokens=96, data_dir=settings.data_dir.resolve()
    )


def test_one_pipeline_per_process_and_environment(
    configured: str, monkeypatch: pytest.MonkeyPatch, pg_base_url: str
) -> None:
    spec = PipelineSpec.of(load_settings())
    opened: list[object] = []

    def open_from_a_thread() -> None:
        opened.append(shared_pipeline(spec))

    threads = [threading.Thread(target=open_from_a_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(p) for p in opened}) == 1  # opened once, shared by every thread

    monkeypatch.setenv("TIDAL_DATABASE_URL", pg_base_url)  # the worker's secrets changed
    other = shared_pipeline(spec)
    assert other is not opened[0]
    assert other.embedder is opened[0].embedder  # the same model: loaded once per process


def test_a_worker_that_would_build_another_pipeline_refuses(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = PipelineSpec.of(load_settings()).pinned("0123456789abcdef")
    with pytest.raises(ConfigError, match="the run's is 0123456789abcdef"):
        shared_pipeline(spec)


def test_a_workers_own_model_settings_never_change_the_runs_pipeline(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()  # the flow leaves the model and chunking unset
    spec = PipelineSpec.of(settings)
    # What a worker's environment may still hold from another deployment.
    monkeypatch.setenv("TIDAL_EMBEDDING_MODEL", "text-embedding-3-large")
    monkeypatch.setenv("TIDAL_EMBEDDING_DIMENSIONS", "256")
    monkeypatch.setenv("TIDAL_CHUNK_TOKENS", "100")

    worker = spec.load()
    assert worker.embedding_model is worker.embedding_dimensions is worker.chunk_tokens is None
    assert worker == settings.model_copy(update={"data_dir": settings.data_dir.resolve()})


def test_a_worker_whose_key_leads_to_another_width_refuses_before_the_store(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway whose keys alias one model name to deployments of different widths: the
    worker's own key probes 768 where the run's found 1536."""
    with FakeOpenAI(api_key="sk-run", other_keys={"sk-worker": 768}) as api:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-run")
        settings = load_settings(
            embedder="openai", embedding_model="gateway-embed", openai_base_url=api.base_url
        )
        run = shared_pipeline(PipelineSpec.of(settings))  # creates the 1536-wide table
        spec = PipelineSpec.of(settings).pinned(run.fingerprint)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-worker")

        with pytest.raises(ConfigError, match=f"the run's is {run.fingerprint}: give workers"):
            shared_pipeline(spec)


EXIT_ORDER = textwrap.dedent("""
    import pgserver.postgres_server as server
    import tidal.runtime as runtime

    stop = server.PostgresServer._cleanup  # what pgserver registers with atexit as it starts

    def spy(self):
        print("pipelines open as the embedded Postgres stops:", len(runtime._pipelines))
        stop(self)

    server.PostgresServer._cleanup = spy
    from tidal.settings import load_settings
    runtime.shared_pipeline(runtime.PipelineSpec.of(load_settings()))
""")


@pytest.mark.slow  # an embedded Postgres in a process of its own
def test_at_exit_the_shared_pipelines_close_before_the_embedded_postgres_stops(
    tmp_path: Path,
) -> None:
    """Otherwise the pool or the claims' presence connection can meet the server stopped and
    log "error connecting in 'tidal': ... server closed the connection" after a run's output."""
    (tmp_path / "corpus").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "PREFECT_"))}
    env.update(TIDAL_SOURCE=str(tmp_path / "corpus"), TIDAL_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run(
        [sys.executable, "-c", EXIT_ORDER],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pipelines open as the embedded Postgres stops: 0" in done.stdout, done.stdout
