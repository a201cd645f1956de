"""The Prefect server settings scripts/stack.sh and deployments/docker-compose.yml give (and
flows/server.py, to the local server) are real settings of the installed Prefect, with values it
accepts: Prefect ignores a misspelt variable without a word, and the server's database would
then grow without bound."""

from __future__ import annotations

import re

import pytest

from flows import server as server_module
from tidal.settings import REPO_ROOT

RETENTION = (
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD",
    "PREFECT_SERVER_EVENTS_RETENTION_PERIOD",
)


def _stack_sh() -> dict[str, str]:
    """``NAME=value`` and ``NAME=${NAME:-value}`` given to the server in scripts/stack.sh."""
    text = (REPO_ROOT / "scripts" / "stack.sh").read_text()
    pairs = re.findall(r"^(PREFECT_SERVER_\w+)=(\S+)", text, re.MULTILINE)
    pairs += re.findall(r" (PREFECT_SERVER_\w+)=(\S+)", text)
    return {name: re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", value) for name, value in pairs}


def _compose() -> dict[str, str]:
    """``NAME: value`` lines of deployments/docker-compose.yml (comments and quotes off)."""
    text = (REPO_ROOT / "deployments" / "docker-compose.yml").read_text()
    pairs = re.findall(r"^\s+(PREFECT_SERVER_\w+):\s*([^#\n]+)", text, re.MULTILINE)
    return {name: value.strip().strip('"') for name, value in pairs}


@pytest.mark.parametrize("given", [_stack_sh(), _compose()], ids=["stack.sh", "compose"])
def test_the_servers_settings_are_prefects_own(
    given: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import Settings

    assert set(RETENTION) <= set(given)
    every = Settings().to_environment_variables(exclude_unset=False)
    assert set(given) <= set(every), set(given) - set(every)
    literal = {name: value for name, value in given.items() if not re.search(r"[$\"']", value)}
    assert set(RETENTION) <= set(literal)
    for name, value in literal.items():
        monkeypatch.setenv(name, value)
    recognised = Settings().to_environment_variables(exclude_unset=True)  # raises on a bad value
    assert set(literal) <= set(recognised), set(literal) - set(recognised)


def test_the_retention_chosen_vacuums_run_history_and_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import Settings

    for name, value in _compose().items():
        monkeypatch.setenv(name, value)
    server = Settings().server
    assert server.services.db_vacuum.enabled_vacuum_types >= {"events", "flow_runs"}
    assert server.services.db_vacuum.retention_period.days == 30
    assert server.events.retention_period.days == 7
    same = {name: _compose()[name] for name in RETENTION}
    assert {name: _stack_sh()[name] for name in RETENTION} == same
    assert same == server_module.RETENTION  # the local server Tidal keeps running


def test_every_server_records_events_in_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings

    recording = server_module.RECORDING
    assert {name: _compose()[name] for name in recording} == recording
    assert {name: _stack_sh()[name] for name in recording} == recording
    for name, value in recording.items():
        monkeypatch.setenv(name, value)
    services = Settings().server.services
    assert services.task_run_recorder.batch_size == 500
    assert services.task_run_recorder.read_batch_size == 100
    assert services.event_persister.batch_size == 500


@pytest.mark.slow  # importing Prefect's server services starts a process
def test_the_recorders_flush_interval_is_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's task run recorder sleeps ``int(flush_interval)`` seconds between flushes: a
    fraction of a second becomes 0 and the idle server spins a core (it did, at 0.5)."""
    from prefect.server.services.task_run_recorder import TaskRunRecorder

    for name, value in server_module.RECORDING.items():
        monkeypatch.setenv(name, value)
    interval = TaskRunRecorder.service_settings().flush_interval
    assert int(interval) == interval >= 1


def test_the_compose_servers_events_go_through_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-memory broker drops events past 10,000 queued; the compose server's settings
    name prefect-redis's modules, which exist, and its Redis."""
    import importlib

    from prefect.settings import Settings
    from prefect_redis.client import RedisMessagingSettings

    text = (REPO_ROOT / "deployments" / "docker-compose.yml").read_text()
    given = dict(re.findall(r"^\s+(PREFECT_(?:MESSAGING|REDIS)_\w+):\s*(\S+)", text, re.MULTILINE))
    for name, value in {**_compose(), **given}.items():
        monkeypatch.setenv(name, value)
    server = Settings().server
    modules = {
        server.events.messaging_broker,
        server.events.messaging_cache,
        server.events.causal_ordering,
        server.concurrency.lease_storage,
    }
    assert {m.split(".")[0] for m in modules} == {"prefect_redis"}
    for module in modules:
        importlib.import_module(module)
    assert RedisMessagingSettings().url == "redis://redis:6379/1"
    assert server.docket.url == "redis://redis:6379/2"
