"""A Supabase Storage bucket: the production source, read through the official ``supabase`` client.

Listing walks the cursor-paged ``list-v2`` route, flat, because the older offset ``list`` is
per-folder, capped, matches prefixes case-insensitively and answers a missing bucket with an
empty list; Storage's eTag is the change key, so an unchanged corpus costs no downloads.

What a failure of the client means is ``supabase_errors``' to say. The key never appears in the
uri, the repr, an error or a log line.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import supabase
from pydantic import ValidationError
from storage3.utils import StorageException

from tidal.errors import (
    ConfigError,
    SourceError,
    TidalError,
)
from tidal.records import SourceFile
from tidal.retrying import OUTAGE_SECONDS, Service
from tidal.sources.supabase_errors import KEY_VARIABLE, status_of, storage_error

log = logging.getLogger("tidal.sources")

PLACEHOLDER = ".emptyFolderPlaceholder"
"""What Supabase's dashboard uploads to make an empty folder: never listed."""
# What the client raises on purpose; anything else is a bug and propagates untouched.
_CLIENT_ERRORS = (StorageException, httpx.HTTPError, ValidationError)


class SupabaseSource:
    """Lists and downloads the objects under ``prefixes`` (folders) of one bucket."""

    def __init__(
        self,
        url: str,
        key: str,
        bucket: str,
        prefixes: Sequence[str] = ("",),
        *,
        timeout: float = 30.0,
        page_size: int = 1000,
        outage_seconds: float = OUTAGE_SECONDS,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError("SUPABASE_URL must be the project's http(s) URL")
        if "/storage/v1" in url:
            raise ConfigError(
                "SUPABASE_URL is the project's URL, https://<project>.supabase.co, without "
                "/storage/v1 (the client adds it)"
            )
        if not bucket or "/" in bucket:
            raise ConfigError(f"bucket name {bucket!r} is empty or contains '/'")
        if timeout <= 0 or page_size < 1:
            raise ConfigError("timeout must be positive and page_size at least 1")
        _require_service_role(key)
        self.bucket = bucket
        self.prefixes = _folders([prefixes] if isinstance(prefixes, str) else list(prefixes))
        self.timeout = timeout
        self.page_size = page_size
        shown = ",".join(p.rstrip("/") for p in self.prefixes)
        self.uri = f"supabase://{bucket}/{shown}" if shown else f"supabase://{bucket}"
        self._key = key
        # storage3 truncates ``storage_client_timeout`` to whole seconds (0.5 becomes 0, which
        # fails every request at once) and deprecates it; a client of our own keeps the timeout
        # exact. It is this source's, closed by ``close``; the supabase client shares it.
        # HTTP/1.1, unlike storage3's own client: over HTTP/2, hpack logs header values at DEBUG
        # and only marks ``authorization`` sensitive, so the ``apikey`` header would be logged.
        self._read = threading.local()
        self._http = httpx.Client(
            timeout=timeout, follow_redirects=True, event_hooks={"response": [self._seen]}
        )
        options = supabase.ClientOptions(httpx_client=self._http)
        self._storage = supabase.create_client(url, key, options=options).storage
        self.service = Service(
            "Supabase Storage", "SUPABASE_URL", self._look_up_bucket, outage_seconds=outage_seconds
        )

    def __repr__(self) -> str:
        return f"SupabaseSource({self.uri!r})"

    def close(self) -> None:
        self._http.close()

    def covers(self, path: str) -> bool:
        return any(path.startswith(prefix) for prefix in self.prefixes)

    def __enter__(self) -> SupabaseSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list(self) -> Iterator[SourceFile]:
        """Every object under the prefixes, sorted and de-duplicated; no object is downloaded.

        The bucket is checked first because list-v2 answers a missing bucket with an empty page,
        which would otherwise read as an empty corpus.
        """
        self._check_bucket()
        found: dict[str, SourceFile] = {}
        for prefix in self.prefixes:
            for entry in self._walk(prefix):
                file = _to_source_file(entry)
                if file is not None:
                    found[file.path] = file
        if not found and any(self.prefixes):
            self._refuse_empty_prefixes()
        if not found:
            log.warning("no files under %s", self.uri)
        yield from (found[path] for path in sorted(found))

    def _refuse_empty_prefixes(self) -> None:
        """Prefixes that list nothing in a bucket that holds objects elsewhere are almost
        always a typo (they are case-sensitive): say which folders do exist."""
        bucket = self._storage.from_(self.bucket)
        options = {"prefix": "", "limit": 100, "with_delimiter": True}
        page = self.service.call(
            lambda: self._page(bucket, options, ""), what="listing the top folders"
        )
        names = sorted(
            {f.name.rstrip("/") for f in page.folders or []}
            | {o.name for o in page.objects or [] if o.name != PLACEHOLDER}
        )
        if names:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise SourceError(
                f"nothing under {', '.join(p.rstrip('/') for p in self.prefixes)} in bucket "
                f"{self.bucket!r}, which holds {shown}; check TIDAL_SOURCE (prefixes are "
                "case-sensitive)"
            )

    def read(self, file: SourceFile) -> bytes:
        if "" in file.path.split("/"):
            # storage3 drops empty segments from the URL: it would fetch another object
            # ('prds/x.md' for 'prds//x.md'), whose bytes would be indexed under this name.
            raise SourceError(
                "object name has an empty folder ('//'), which the Storage client cannot ask "
                "for; rename the object",
                path=file.path,
            )
        return self.service.call(lambda: self._download(file), what=f"download {file.path!r}")

    def version_of(self, file: SourceFile, data: bytes) -> str:
        """The ETag the download itself answered with: the object may have been replaced since
        the listing. A server that sends none is taken at the listing's word."""
        etag = getattr(self._read, "etag", None)
        return _etag(etag) if etag else file.content_hash

    def _seen(self, response: httpx.Response) -> None:
        """Keep an object download's ETag for ``version_of`` (storage3 returns bytes only)."""
        if response.request.method == "GET" and "/object/" in response.request.url.path:
            self._read.etag = response.headers.get("etag")

    def _download(self, file: SourceFile) -> bytes:
        # storage3 percent-decodes the path before quoting it, so a literal '%' is pre-escaped.
        try:
            return self._storage.from_(self.bucket).download(file.path.replace("%", "%25"))
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, "downloading the object", path=file.path) from exc
        except ValueError as exc:  # storage3 refuses '.' and '..' segments before any request
            raise SourceError(f"object name is not downloadable: {exc}", path=file.path) from None

    def check(self) -> None:
        """The key is checked on opening; this asks Storage for the bucket (one request)."""
        self._check_bucket()

    def _check_bucket(self) -> None:
        self.service.call(self._look_up_bucket, what="bucket lookup")

    def _look_up_bucket(self) -> None:
        try:
            self._storage.get_bucket(self.bucket)
        except _CLIENT_ERRORS as exc:
            error = self._error(exc, "looking up the bucket")
            if status_of(exc) == 404:
                error = SourceError(
                    f"bucket {self.bucket!r} not found (or not visible to this key); "
                    f"check the bucket name and that {KEY_VARIABLE} is the service-role key"
                )
            raise error from exc

    def _walk(self, prefix: str) -> Iterator[Any]:
        """Every object whose name starts with ``prefix``, one list-v2 page at a time."""
        bucket = self._storage.from_(self.bucket)
        cursor: str | None = None
        while True:
            options: dict[str, Any] = {
                "prefix": prefix,
                "limit": self.page_size,
                "with_delimiter": False,
            }
            if cursor is not None:
                options["cursor"] = cursor
            page = self.service.call(
                lambda options=options: self._page(bucket, options, prefix), what="listing page"
            )
            yield from page.objects
            if not page.hasNext:
                return
            if not page.nextCursor or page.nextCursor == cursor:
                raise SourceError(
                    f"list-v2 said more objects follow {prefix!r} but gave no new cursor; "
                    "refusing to return a partial listing"
                )
            cursor = page.nextCursor

    def _page(self, bucket: Any, options: dict[str, Any], prefix: str) -> Any:
        try:
            return bucket.list_v2(options)
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, f"listing {prefix or 'the bucket'!r}") from exc

    def _error(self, exc: BaseException, doing: str, path: str | None = None) -> TidalError:
        return storage_error(
            exc, doing, path=path, bucket=self.bucket, timeout=self.timeout, scrub=self._scrub
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "[key]") if self._key else text


def _to_source_file(entry: Any) -> SourceFile | None:
    """The listed object as a ``SourceFile`` (hidden names as ignored ones), or None for folder
    markers and placeholders, which are not documents anyone wrote."""
    name: str = entry.name
    if name.endswith("/") or name.rsplit("/", 1)[-1] == PLACEHOLDER:
        return None  # folder markers, and the dashboard's stand-in for an empty folder
    if any(part.startswith(".") for part in name.split("/")):
        return SourceFile(
            path=name, size=0, content_hash="", ignored="a hidden name (a part starts with '.')"
        )
    meta = entry.metadata
    if not meta:
        log.warning("skipping %s: Storage lists it without metadata (upload unfinished?)", name)
        return None
    size = int(meta.get("size", meta.get("contentLength")) or 0)
    etag = _etag(str(meta.get("eTag") or ""))
    return SourceFile(
        path=name, size=size, content_hash=etag or f"{size}:{meta.get('lastModified')}"
    )


def _etag(value: str) -> str:
    """An ETag as the change key: no weak marker, no quotes."""
    return value.removeprefix("W/").strip('"')


def _folders(prefixes: list[str]) -> list[str]:
    """Prefixes as folder names ending in '/', nested ones dropped; ``""`` is the whole bucket."""
    folders = sorted({p.strip("/") + "/" if p.strip("/") else "" for p in prefixes})
    if not folders:
        raise ConfigError("give at least one prefix ('' for the whole bucket)")
    return [f for f in folders if not any(f != o and f.startswith(o) for o in folders)]


def _require_service_role(key: str) -> None:
    """Refuse keys that Storage would answer with empty listings instead of an error.

    A legacy key is a JWT whose ``role`` claim says what it is; the newer opaque keys say it in
    their prefix. An anon or publishable key lists every bucket as empty, so it must not pass.
    """
    if not key:
        raise ConfigError(f"{KEY_VARIABLE} is empty")
    if key.startswith("sb_publishable_"):
        raise ConfigError(f"{KEY_VARIABLE} holds a publishable key; give the secret key")
    parts = key.split(".")
    if len(parts) != 3:
        return
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return
    role = claims.get("role") if isinstance(claims, dict) else None
    if role is not None and role != "service_role":
        raise ConfigError(
            f"{KEY_VARIABLE} holds the {role!r} key; Storage lists nothing for it. "
            "Give the project's service_role key"
        )
