#!/usr/bin/env bash
# Install what the tests need and run them: the README's test command, and what CI runs.
#   bash scripts/test.sh [pytest args...]
# Needs python3 (3.11+). Creates .venv, makes sure Redis answers on 127.0.0.1:6379 (starting
# it, or installing it with apt when run as root, if not), lints, then runs the whole suite in
# two tiers (tests/tiers.py): the fast tier first (no service, under a minute), then the slow
# one (Postgres, Redis, Prefect, the model, processes), only if the fast one passed. Each tier
# runs on two pytest-xdist workers, a test module to a worker: most slow tests wait (on a
# server starting, a fake API pacing them, an outage), so two cores run two modules at once.
# Arguments go to both (`-x`, `-k budget`, a test file, `-n 0` to run in one process); with
# `-m` the suite runs once, as asked.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"

redis_up() { .venv/bin/python -c "import redis; redis.Redis(host='127.0.0.1', port=6379, socket_timeout=2).ping()" 2>/dev/null; }
if ! redis_up; then
    if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    fi
    mkdir -p /tmp/tidal-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp/tidal-redis --logfile /tmp/tidal-redis/redis.log
    for _ in $(seq 50); do redis_up && break; sleep 0.2; done
    redis_up || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
fi

.venv/bin/python -m ruff check .

for arg in "$@"; do
    case "$arg" in -m | -m*) exec .venv/bin/python -m pytest "$@" ;; esac
done
for tier in fast slow; do
    echo "== the $tier tier"
    status=0
    .venv/bin/python -m pytest -m "$tier" -n 2 --dist loadfile "$@" || status=$?
    # 5: nothing to run in this tier (arguments that select only the other one's tests)
    if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
done
