"""Prefect's side of Tidal: the ``tidal`` flow, the ad hoc run around it, the CLI, and the local
Prefect server. The decisions are the ``tidal`` package's; nothing there imports this one.

Importing the package first sets Prefect's environment defaults (``flows.environment``).
"""

from flows import environment  # noqa: F401 - before anything here imports Prefect
