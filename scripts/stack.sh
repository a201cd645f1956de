#!/usr/bin/env bash
# A local Prefect stack for Tidal, for a newcomer or a test:
#   bash scripts/stack.sh          Prefect server (background), the `tidal` process pool,
#                                  `prefect deploy --all`, one worker (background)
#   bash scripts/stack.sh stop     stop what `up` started
# Then: PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/prefect deployment run tidal/ingest --watch
#
# Settings: TIDAL_PREFECT_PORT (4200), TIDAL_STACK_DIR (.tidal/stack: pids, logs and the
# server's database), PYTHON (.venv/bin/python), PREFECT_FLOWS_HEARTBEAT_FREQUENCY (180 s: a
# killed run is marked Crashed after three silent periods, deployments/zombies.py). The worker
# inherits this environment: put TIDAL_DATABASE_URL, TIDAL_REDIS_URL and keys there, not in
# parameters. Only a server this script started is reused: another one on the port is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PORT=${TIDAL_PREFECT_PORT:-4200}
STACK=${TIDAL_STACK_DIR:-.tidal/stack}
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export TIDAL_PROJECT_DIR="$PWD"
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$STACK"

gone() {  # gone GROUP TENTHS: whether process group GROUP is gone within TENTHS of a second
    for _ in $(seq "$2"); do kill -0 -- "-$1" 2>/dev/null || return 0; sleep 0.1; done
    ! kill -0 -- "-$1" 2>/dev/null
}

stop_one() {  # stop_one NAME TENTHS: TERM NAME's process group, KILL it after TENTHS
    [ -f "$STACK/$1.pid" ] || return 0
    local group
    group=$(cat "$STACK/$1.pid")
    kill -TERM -- "-$group" 2>/dev/null || true  # the whole process group
    if ! gone "$group" "$2"; then
        kill -KILL -- "-$group" 2>/dev/null || true
        gone "$group" 50 || echo "process group $group ($1) survived SIGKILL" >&2
    fi
    rm -f "$STACK/$1.pid"
}

stop() {
    # An idle worker exits on TERM in about a second, but one that has run a flow never does
    # (Prefect 3.9 turns TERM into a SIGINT to itself, which goes unheeded); it holds nothing to
    # save, so it gets 3 s. The server gets 10 s to close its database.
    stop_one worker 30
    stop_one server 100
}

if [ "${1:-up}" = stop ]; then
    stop
    exit 0
fi

healthy() {
    "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "$PREFECT_API_URL/health" 2>/dev/null
}

ours() {  # the server this script started, still running
    [ -f "$STACK/server.pid" ] && kill -0 -- "-$(cat "$STACK/server.pid")" 2>/dev/null
}

if healthy; then
    if ! ours; then
        # Someone else's server (another stack, `prefect server start`, the local server ad hoc
        # runs keep): deploying and starting a worker there would change what is not ours.
        echo "a server this script did not start answers at $PREFECT_API_URL; set" \
            "TIDAL_PREFECT_PORT to a free port (or stop that server)" >&2
        exit 1
    fi
    echo "using the Prefect server this script started at $PREFECT_API_URL"
else
# Logs streamed out: `prefect deployment run --watch` then prints the run's log lines (its summary,
# and a failure's reason) among the events, not only the final state's name. Its own database,
# and a UI that asks this port's API (Prefect builds the UI's address from these, not --port).
# Retention, so the server's database stops growing (docs/operations.md#the-prefect-servers-own-database):
# Prefect keeps every flow run with its task runs, states, logs and artifacts unless its
# db_vacuum service's "flow_runs" vacuum is on (by default only "events" is); 30 days of that
# history covers looking into a failed run, and each file's status stays in Tidal's own
# ingested_files for good. Events: Prefect's own 7 days, said here so it is a decision.
# Events read and written in batches (flows/server.py RECORDING): Prefect's task run recorder
# takes one at a time, and the UI of a run of thousands of files fell minutes behind it.
PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=${PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED:-events,flow_runs} \
PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD=${PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD:-2592000} \
PREFECT_SERVER_EVENTS_RETENTION_PERIOD=${PREFECT_SERVER_EVENTS_RETENTION_PERIOD:-P7D} \
PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE=${PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE:-500} \
PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE=${PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE:-100} \
PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE=${PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE:-500} \
PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE=${PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE:-100} \
PREFECT_SERVER_SERVICES_TRIGGERS_READ_BATCH_SIZE=${PREFECT_SERVER_SERVICES_TRIGGERS_READ_BATCH_SIZE:-100} \
PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL=${PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL:-1} \
PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL=${PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL:-1} \
PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED=true PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED=true \
PREFECT_SERVER_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$(cd "$STACK" && pwd)/prefect.db" \
PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT="$PORT" \
PREFECT_SERVER_UI_API_URL="$PREFECT_API_URL" \
setsid "$PYTHON" -m prefect server start --host 127.0.0.1 --port "$PORT" --analytics-off \
    > "$STACK/server.log" 2>&1 &
echo $! > "$STACK/server.pid"
fi
for _ in $(seq 480); do
    healthy && break
    sleep 0.25
done
healthy || { echo "Prefect server did not start; see $STACK/server.log" >&2; stop; exit 1; }

"$PYTHON" -m prefect work-pool inspect tidal >/dev/null 2>&1 \
    || "$PYTHON" -m prefect work-pool create tidal --type process
# A run whose process was killed ends Crashed, not Running: an automation on the server, made
# while the deployment is (neither needs the other).
"$PYTHON" deployments/zombies.py &
zombies=$!
"$PYTHON" -m prefect --no-prompt deploy --all
wait "$zombies"
setsid "$PYTHON" -m prefect worker start --pool tidal > "$STACK/worker.log" 2>&1 &
echo $! > "$STACK/worker.pid"

echo "Prefect UI: http://127.0.0.1:$PORT   (logs and pids in $STACK)"
echo "Run it:     PREFECT_API_URL=$PREFECT_API_URL $PYTHON -m prefect deployment run tidal/ingest --watch"
echo "Stop it:    bash scripts/stack.sh stop"
