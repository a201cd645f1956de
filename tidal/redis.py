"""The Redis that ``TIDAL_REDIS_URL`` names: connected with one PING, and watched while in use.

Task results and the shared OpenAI budget both live there. A Redis that is down or refuses the
credentials fails at start-up, naming the variable and the fix with the URL's password masked,
instead of failing every file that needs it.
"""

from __future__ import annotations

import redis

from tidal.errors import ConfigError, Unavailable
from tidal.redact import redact_url
from tidal.retrying import OUTAGE_SECONDS, Service


def connect_redis(url: str, *, timeout: float = 10.0, holds: str | None = None) -> redis.Redis:
    """A client for ``url`` that has answered one PING, else ConfigError naming
    ``TIDAL_REDIS_URL``. ``timeout``: seconds for the connection and each command; ``holds``:
    what lives in this Redis, said in the message so the user knows what waits on it."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except redis.AuthenticationError:
        client.close()
        raise ConfigError(
            f"Redis at TIDAL_REDIS_URL ({redact_url(url)}) refused the credentials; fix the "
            "user and password in the URL"
        ) from None
    except redis.RedisError as exc:
        client.close()
        raise ConfigError(
            f"Redis at TIDAL_REDIS_URL ({redact_url(url)}) does not answer ({exc}); start it, "
            "or fix the URL" + (f" ({holds} lives there)" if holds else "")
        ) from None
    return client


def redis_service(client: redis.Redis, *, outage_seconds: float = OUTAGE_SECONDS) -> Service:
    """The health of the Redis behind ``client`` in this process (``tidal.retrying``), probed
    with a PING, for calls that wait out its outages. It answered ``connect_redis``'s PING."""

    def ping() -> None:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis does not answer: {exc}") from exc

    service = Service("Redis", "TIDAL_REDIS_URL", ping, outage_seconds=outage_seconds)
    service.answered()
    return service
