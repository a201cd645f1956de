"""Credentials masked out of URLs, so a URL can be logged or put in an error message."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

_SECRET_PARAMETERS = {"password", "passwd", "pass", "sslpassword", "token", "api_key", "apikey"}
"""Query parameters that carry a credential in the URLs libpq and redis-py accept."""


def redact_url(url: SecretStr | str) -> str:
    """The URL with every credential masked, safe for logs: the password in ``user:pw@``, and
    ``password=`` (or the like) among the query parameters, as libpq and redis-py accept."""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    parts = urlsplit(raw)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    pairs = [
        f"{name}=***" if unquote(name).lower() in _SECRET_PARAMETERS and sep else pair
        for pair in parts.query.split("&")
        for name, sep, _ in [pair.partition("=")]
    ]
    masked = f"{parts.scheme}://{netloc}{parts.path}"  # not urlunsplit: it drops an empty //
    masked += f"?{'&'.join(pairs)}" if parts.query else ""
    return masked + (f"#{parts.fragment}" if parts.fragment else "")
