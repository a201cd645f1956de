"""The tiers (tests/tiers.py): a test is slow by the fixtures it uses, and a fast test that
reaches for a service fails, even when the code under test swallows the refusal."""

from __future__ import annotations

import pytest

pytest_plugins = ("pytester",)

SUITE = """
import os
import socket
import subprocess

import pytest


@pytest.fixture
def redis_url():
    return "redis://127.0.0.1:6379/15"


def test_pure():
    assert sorted("tidal") == ["a", "d", "i", "l", "t"]


def test_uses_redis(redis_url):
    assert redis_url


def test_starts_a_process():
    subprocess.run(["true"], check=True)


def test_swallows_the_refusal():
    try:
        subprocess.run(["true"], check=True)
    except Exception:
        pass


def test_forks():
    if os.fork() == 0:
        os._exit(0)


def test_opens_the_shared_redis():
    socket.create_connection(("127.0.0.1", 6379), timeout=1).close()


def test_connects_to_postgres():
    import psycopg

    psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=1)


@pytest.mark.slow
def test_marked_slow_starts_a_process():
    subprocess.run(["true"], check=True)
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    import psycopg  # noqa: F401 - imported, as in the suite: the guard patches it then

    pytester.makepyfile(test_inner=SUITE)
    return pytester.runpytest_inprocess(
        "-p", "tests.tiers", "-p", "no:cacheprovider", "-o", "addopts=", *args
    )


def test_a_test_using_a_service_fixture_or_marked_slow_is_slow(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "-m", "slow", "--collect-only", "-q")
    collected = {line.split("::")[1] for line in result.outlines if line.startswith("test_inner")}
    assert collected == {"test_uses_redis", "test_marked_slow_starts_a_process"}


def test_a_fast_test_reaching_for_a_service_fails_naming_it(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "-m", "fast")
    result.assert_outcomes(passed=1, failed=5, deselected=2)
    failed = {
        line.split("::")[1].split()[0] for line in result.outlines if line.startswith("FAILED")
    }
    assert failed == {
        "test_starts_a_process",
        "test_swallows_the_refusal",  # refused, caught, and still failed afterwards
        "test_forks",
        "test_opens_the_shared_redis",
        "test_connects_to_postgres",
    }
    output = result.stdout.str()
    assert "starts a process (true)" in output
    assert "connects to a service at 127.0.0.1:6379" in output
    assert "connects to Postgres" in output
    assert "Mark it slow" in output
