"""Serve the ``tidal/ingest`` deployment from this process, with its daily schedule.

The lightest way to run Tidal on a schedule: no work pool or worker, just this process and a
Prefect server (``PREFECT_API_URL``). ``prefect.yaml`` is the pool-and-worker alternative.

    python deployments/serve.py            # daily at 03:00 UTC
    TIDAL_CRON="30 1 * * *" python deployments/serve.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.ingest import tidal  # noqa: E402

if __name__ == "__main__":
    tidal.serve(
        name="ingest",
        cron=os.environ.get("TIDAL_CRON", "0 3 * * *"),
        description="Scan the source, parse, chunk, embed and store every new or changed file.",
    )
