"""Serve the ``tidal/ingest`` deployment from this process, with its daily schedule.

The lightest way to run Tidal on a schedule: no work pool or worker, just this process and a
Prefect server (``PREFECT_API_URL``). ``prefect.yaml`` + ``scripts/stack.sh`` is the
pool-and-worker way; both register the same deployment name.

    python deployments/serve.py                                   # daily at 03:00 UTC
    TIDAL_CRON="30 1 * * *" TIDAL_TIMEZONE=Europe/Paris python deployments/serve.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect.schedules import Cron  # noqa: E402

from flows.ingest import tidal  # noqa: E402

if __name__ == "__main__":
    tidal.serve(
        name="ingest",
        schedule=Cron(
            os.environ.get("TIDAL_CRON", "0 3 * * *"),
            timezone=os.environ.get("TIDAL_TIMEZONE", "UTC"),
        ),
        description="Scan the source, parse, chunk, embed and store every new or changed file.",
    )
