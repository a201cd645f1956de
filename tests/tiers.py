"""The suite's two tiers, decided at collection, and the guard that keeps them honest.

* ``slow``: the test needs a service - Postgres, Redis, the Prefect harness, the local model,
  or a process of its own (a CLI run, a server, a Dask cluster) - or is paced by the real
  clock for seconds. A test is slow when it uses a fixture that starts a service
  (``SERVICE_FIXTURES``, directly or through another fixture), when it is listed in ``SLOW``
  (tests that start their service themselves), or when it is marked ``@pytest.mark.slow``.
* ``fast``: every other test - domain code, in-memory fakes, the in-process fake HTTP servers.

``pytest -m fast`` runs the fast tier (under a minute), ``pytest -m slow`` the rest;
``scripts/test.sh`` runs both, fast first.

A fast test runs under a guard: connecting to Postgres or to the shared Redis, starting a
process (``subprocess``, ``fork``, a Dask cluster, a temporary Prefect server), or loading the
local model fails it, with the fix in the message. So a test that needs a service cannot sit
in the fast tier unnoticed; it fails there until it is marked slow. Only the test's own
threads are held to it (threads a slow test left behind are not the fast test's doing). A fast
test that takes more than ``FAST_SECONDS`` is named at the end of the run: inject its sleep
(``Service.sleep``, ``RateBudget.sleep``) or mark it slow.
"""

from __future__ import annotations

import importlib.abc
import os
import platform
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

SERVICE_FIXTURES = frozenset(
    {
        "pg_base_url",  # the session's Postgres (database_url, env build on it)
        "redis_client",  # the shared Redis (and every redis_url fixture)
        "redis_url",
        "prefect_harness",  # a temporary Prefect API server
        "embedder",  # the real model
        "pgvector_08_url",  # a Postgres with pgvector 0.8 (tests/test_search.py)
    }
)
"""Fixtures that start or reach a service: a test using one (even through another fixture)
is slow."""

SLOW = frozenset(
    {
        # Whole modules: every test starts a process or a service of its own.
        "test_crash_resume.py",  # a driver process per kill point
        "test_dask.py",  # local Dask clusters
        "test_dask_cluster.py",  # a dask scheduler and worker processes
        "test_deployment.py",  # a Prefect server and worker processes
        "test_layers.py",  # imports checked in a fresh interpreter
        "test_local_server.py",  # real `prefect server start` processes
        "test_main.py",  # the main job as a user runs it
        "test_outage.py",  # a Postgres of its own, stopped and started
        "test_wheel.py",  # pip builds the wheel; the main job runs from it
        # Tests that start a process or a service themselves.
        "test_hostile_files.py::test_an_unreadable_folder_fails_the_listing_and_deletes_nothing",
        "test_hostile_files.py::test_an_unreadable_file_fails_alone_and_the_rest_land",
        "test_index_truth.py::test_a_wrong_redis_password_says_the_credentials_were_refused",
        "test_local_embedder.py::test_the_model_loads_on_first_use_and_its_declared_shape_is_its_real_one",
        "test_local_embedder.py::test_a_model_that_will_not_load_fails_each_file_that_asks",
        "test_local_embedder.py::test_warm_up_loads_the_model_and_asks_nothing_more",
        "test_openai_embedder.py::test_a_redis_that_dies_mid_run_is_waited_out_then_a_service_down",
        "test_openai_embedder.py::test_threads_and_another_process_on_one_redis_never_overdraw_the_bucket",
        "test_openai_embedder.py::test_the_sdk_is_imported_only_for_a_request",
        # The same test on the shared Redis (the fixture is asked for by parameter).
        "test_openai_embedder.py::test_two_budgets_on_one_namespace_share_it[redis]",
        "test_openai_embedder.py::test_the_bucket_refills_and_keeps_its_margin[redis]",
        "test_openai_embedder.py::test_a_request_over_the_bucket_less_its_margin_waits_for_a_full_bucket[redis]",
        "test_openai_embedder.py::test_a_large_request_gets_its_turn_among_small_ones_that_keep_the_bucket_busy[redis]",
        "test_openai_embedder.py::test_calibration_only_ever_drains[redis]",
        # Paced on the real clock for seconds, judged by the fake server's own window.
        "test_openai_embedder.py::test_threads_never_exceed_the_request_budget",
        "test_openai_embedder.py::test_threads_never_exceed_the_token_budget",
        "test_openai_embedder.py::test_without_a_budget_the_same_load_trips_the_servers_limit",
        "test_openai_embedder.py::test_a_budget_binding_on_tokens_keeps_the_servers_bucket_busy",
    }
)
"""Tests (``module.py``, ``module.py::function`` or ``module.py::function[param]``) that start a
service or a process themselves, or are paced by the real clock for seconds. A test added to
one of these modules is slow too; one elsewhere that needs a service fails in the fast tier
until it is listed here or marked ``@pytest.mark.slow``."""

FAST_SECONDS = 2.0
"""A fast test taking longer is reported (not failed: timings on a shared machine are noisy)."""

BLOCKED_IMPORTS = ("torch", "sentence_transformers")
"""Modules only the local model needs; importing them takes seconds."""


class ServiceInFastTest(RuntimeError):
    """Raised where a fast test reaches for a service."""


def pytest_configure(config: pytest.Config) -> None:
    # The processor name is read once per process, with ``uname -p`` (the openai SDK asks for
    # it on its first request): read here, it is no fast test's process.
    platform.uname().processor  # noqa: B018


def _listed(item: pytest.Item) -> str | None:
    module = item.path.name
    function = getattr(item, "originalname", None) or item.name
    for key in (module, f"{module}::{function}", f"{module}::{item.name}"):
        if key in SLOW:
            return key
    return None


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by the markers set here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    used: set[str] = set()
    for item in items:
        listed = _listed(item)
        if listed:
            used.add(listed)
        fixtures = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if listed or fixtures or item.get_closest_marker("slow"):
            if item.get_closest_marker("fast"):
                raise pytest.UsageError(
                    f"{item.nodeid} is marked fast but needs a service "
                    f"({', '.join(sorted(fixtures)) or listed or 'marked slow'})"
                )
            item.add_marker(pytest.mark.slow)
        else:
            item.add_marker(pytest.mark.fast)
    # A name in SLOW that matches nothing is a renamed or removed test: its successor would
    # silently be fast. Checked for every module collected whole.
    if not any("::" in arg for arg in config.args):
        collected = {item.path.name for item in items}
        stale = {key for key in SLOW - used if key.partition("::")[0] in collected}
        if stale:
            raise pytest.UsageError(
                f"tests/tiers.py SLOW names tests that do not exist: {sorted(stale)}"
            )


# -- the guard ---------------------------------------------------------------------------------


def _service_ports() -> set[int]:
    from tests.conftest import REDIS_URL

    return {6379, 5432, urlsplit(REDIS_URL).port or 6379}


class _Guard:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.violations: list[str] = []
        self._bystanders = set(threading.enumerate())
        self._undo: list[Callable[[], None]] = []

    def refuse(self, what: str) -> None:
        """Refuse ``what`` when the test's own thread asks; let an older thread through."""
        if threading.current_thread() in self._bystanders and (
            threading.current_thread() is not threading.main_thread()
        ):
            return
        self.violations.append(what)
        raise ServiceInFastTest(
            f"a fast test {what}. Mark it slow (@pytest.mark.slow, or list it in "
            "tests/tiers.py SLOW), or use a service fixture, which marks it slow"
        )

    def patch(self, owner: Any, name: str, replacement: Any) -> None:
        """``owner.name = replacement`` until ``undo``; a class gets back exactly what its own
        namespace held (a classmethod as such, an inherited method as no entry)."""
        own = vars(owner)
        if name in own:
            original = own[name]
            self._undo.append(lambda: setattr(owner, name, original))
        else:
            self._undo.append(lambda: delattr(owner, name))
        setattr(owner, name, replacement)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


class _RefuseImports(importlib.abc.MetaPathFinder):
    def __init__(self, guard: _Guard) -> None:
        self.guard = guard

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name.partition(".")[0] in BLOCKED_IMPORTS:
            self.guard.refuse(f"imports {name} (the local model; seconds to import)")


@contextmanager
def _guarded(item: pytest.Item) -> Iterator[_Guard]:
    guard = _Guard(item.nodeid)
    ports = _service_ports()

    def checked_connect(original: Callable[..., Any]) -> Callable[..., Any]:
        def connect(self: socket.socket, address: Any, *args: Any) -> Any:
            if self.family == socket.AF_UNIX and ".s.PGSQL." in str(address):
                guard.refuse(f"connects to Postgres at {address}")
            if self.family in (socket.AF_INET, socket.AF_INET6) and address[1] in ports:
                guard.refuse(f"connects to a service at {address[0]}:{address[1]}")
            return original(self, address, *args)

        return connect

    guard.patch(socket.socket, "connect", checked_connect(socket.socket.connect))
    guard.patch(socket.socket, "connect_ex", checked_connect(socket.socket.connect_ex))

    if "psycopg" in sys.modules:  # libpq connects in C, past the socket module
        psycopg = sys.modules["psycopg"]

        def refuse_postgres(*args: Any, **kwargs: Any) -> Any:
            guard.refuse("connects to Postgres")

        guard.patch(psycopg, "connect", refuse_postgres)
        guard.patch(psycopg.Connection, "connect", classmethod(refuse_postgres))
        guard.patch(psycopg.AsyncConnection, "connect", classmethod(refuse_postgres))

    def refuse_process(*args: Any, **kwargs: Any) -> Any:
        guard.refuse("starts a process")

    def refuse_command(popen: subprocess.Popen[Any], args: Any, *rest: Any) -> Any:
        command = args if isinstance(args, (str, bytes)) else " ".join(map(str, args))
        guard.refuse(f"starts a process ({command})")

    guard.patch(subprocess.Popen, "_execute_child", refuse_command)
    guard.patch(os, "fork", refuse_process)
    guard.patch(os, "posix_spawn", refuse_process)
    guard.patch(os, "posix_spawnp", refuse_process)
    import _posixsubprocess  # what multiprocessing spawns with

    guard.patch(_posixsubprocess, "fork_exec", refuse_process)

    if "sentence_transformers" in sys.modules:
        st = sys.modules["sentence_transformers"]

        def refuse_model(*args: Any, **kwargs: Any) -> Any:
            guard.refuse("loads the local model")

        guard.patch(st, "SentenceTransformer", refuse_model)
    finder = _RefuseImports(guard)
    sys.meta_path.insert(0, finder)
    guard._undo.append(lambda: sys.meta_path.remove(finder))
    try:
        yield guard
    finally:
        guard.undo()


def _run_guarded(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("fast") is None:
        return (yield)
    with _guarded(item) as guard:
        result = yield
    if guard.violations:
        pytest.fail(
            f"{item.nodeid} is in the fast tier but "
            + "; ".join(dict.fromkeys(guard.violations))
            + ". Mark it slow (@pytest.mark.slow, or list it in tests/tiers.py SLOW).",
            pytrace=False,
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _run_guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _run_guarded(item))


_LAGGARDS = pytest.StashKey[dict[str, float]]()
"""Fast tests that took longer than FAST_SECONDS (their longest phase), by node id."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if item.get_closest_marker("fast") and report.duration > FAST_SECONDS:
        laggards = item.config.stash.setdefault(_LAGGARDS, {})
        laggards[item.nodeid] = max(laggards.get(item.nodeid, 0.0), report.duration)
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    laggards = config.stash.get(_LAGGARDS, {})
    if laggards:
        terminalreporter.section("fast tests slower than FAST_SECONDS (tests/tiers.py)")
        for nodeid, seconds in sorted(laggards.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{seconds:6.2f}s {nodeid}")
