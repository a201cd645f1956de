"""Serve the ``tidal/ingest`` deployment from this process, with its daily schedule.

The lightest way to run Tidal on a schedule: no work pool or worker, just this process and a
Prefect server (``PREFECT_API_URL``). ``prefect.yaml`` + ``scripts/stack.sh`` is the
pool-and-worker way; both register the same deployment name unless ``--name`` says otherwise.

    python deployments/serve.py                                   # daily at 03:00 UTC
    TIDAL_CRON="30 1 * * *" TIDAL_TIMEZONE=Europe/Paris python deployments/serve.py
    python deployments/serve.py --name staging                    # tidal/staging
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from prefect.schedules import Cron

from flows.ingest import tidal


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python deployments/serve.py", description=__doc__)
    parser.add_argument("--name", default="ingest", help="the deployment's name (tidal/<name>)")
    args = parser.parse_args(argv)
    tidal.serve(
        name=args.name,
        schedule=Cron(
            os.environ.get("TIDAL_CRON", "0 3 * * *"),
            timezone=os.environ.get("TIDAL_TIMEZONE", "UTC"),
        ),
        description="Scan the source, parse, chunk, embed and store every new or changed file.",
    )


if __name__ == "__main__":
    main()
