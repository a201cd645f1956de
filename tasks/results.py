"""Where task results are persisted: Redis through prefect-redis, or nowhere."""

from __future__ import annotations

from prefect.filesystems import WritableFileSystem
from prefect_redis import RedisDatabase

from tidal.redis import connect_redis
from tidal.settings import Settings

BLOCK_NAME = "tidal-results"
RESULT_TTL_SECONDS = 30 * 24 * 3600
"""How long Redis keeps a file's result: as long as the Prefect server keeps the task run it
belongs to (30 days, scripts/stack.sh). Redis holds every key in memory, and each edit of a
file writes a new one: without a TTL it grows with every version of every file, forever."""


def result_storage(settings: Settings) -> WritableFileSystem | None:
    """A saved ``RedisDatabase`` block when ``TIDAL_REDIS_URL`` is set, else None: results
    are then not persisted. Nothing reads them back (the index's file table says what is done,
    the run's CSV and artifacts what happened), and writing one file per task costs more
    orchestration time than some files take to ingest.

    Prefect refuses an unsaved block as result storage, and one assigned after the task is
    built fails to save yet still reports Completed; so the block is saved server-side here,
    before any task is configured with it.
    """
    if settings.redis_url is None:
        return None
    check_redis(settings.redis_url.get_secret_value())
    block = RedisDatabase(connection_url=settings.redis_url, key_ttl=RESULT_TTL_SECONDS)
    block.save(BLOCK_NAME, overwrite=True)
    return block


def check_redis(url: str) -> None:
    """One PING, so a Redis that is down fails the run at its start, naming the variable,
    instead of failing every file's result one by one."""
    connect_redis(url, timeout=5).close()
