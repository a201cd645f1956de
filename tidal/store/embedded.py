"""A private Postgres 16 with pgvector, run by the ``pgserver`` package under the data folder.

This is what makes the zero-configuration run work on a fresh machine: no server to install,
no port to pick (it listens on a Unix socket only), stopped when the last process using it exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from tidal.errors import ConfigError

log = logging.getLogger("tidal.store")


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded server for ``data_dir`` and return its connection URL."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver

    pgdata = (data_dir / "pgdata").resolve()
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"TIDAL_DATA_DIR={str(data_dir)!r} cannot be created ({exc});"
            " set it to a writable folder"
        ) from None
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    log.info("embedded Postgres at %s", pgdata)
    return server.get_uri()
