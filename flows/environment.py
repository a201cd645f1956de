"""Prefect's environment defaults for Tidal's processes, set before Prefect is imported.

Prefect reads its settings once, when it is first imported, so these must run first: the
``flows`` package imports this module before anything else. A variable already set wins.
"""

import os

DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A first start creates the server's database; on a loaded 2-core machine that can take
    # longer than Prefect's default wait.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # tidal's own log lines (429 waits, deletions, the index build) reach the flow run's log.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tidal",
    # tidal logs before a flow run exists too (the embedded Postgres starting, the model
    # loading): those lines go to the console, and the API handler need not warn about them.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}

for _name, _value in DEFAULTS.items():
    os.environ.setdefault(_name, _value)
