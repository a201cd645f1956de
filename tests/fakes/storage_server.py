"""A local stand-in for Supabase Storage v1.11.2, serving only the routes ``SupabaseSource`` uses.

Every shape and quirk here comes from the traffic captured from the real server
(``supabase-storage-v1.11.2-responses.json``), so the real ``supabase`` client can run against
it unmodified:

* ``POST /storage/v1/object/list-v2/{bucket}``: flat or delimited, cursor-paged, ``hasNext`` /
  ``nextCursor`` (opaque base64 of ``l:<last key>``) / ``nextCursorKey`` only when a page
  follows; a missing bucket, and an anon key, answer 200 with nothing in them.
* ``GET /storage/v1/object/{bucket}/{path}``: the authenticated download; a missing object is
  HTTP 400 with ``statusCode: "404"`` in the body.
* ``GET /storage/v1/bucket/{id}``: a missing bucket is HTTP 400 with ``statusCode: "404"``.
* A key the server does not know is HTTP 400 with ``statusCode: "403"`` on every route.

Not captured, so inferred and kept minimal: an anon key gets no bucket (row-level security
hides it) and no object, and a download from a missing bucket is the missing-object answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.fakes import KillableServer


def fake_jwt(role: str) -> str:
    """A JWT-shaped key carrying ``role``, as Supabase's legacy keys do; the signature is fake."""

    def part(obj: dict[str, Any]) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"iss": "supabase-demo", "role": role, "exp": 4102444800}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.ZmFrZS1zaWduYXR1cmU"


SERVICE_KEY = fake_jwt("service_role")
ANON_KEY = fake_jwt("anon")

# The server's own key check (src/storage/limits.ts isValidKey): S3-safe ASCII only.
_VALID_KEY = re.compile(r"^(\w|/|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$", re.ASCII)

NOT_FOUND = {
    "statusCode": "404",
    "error": "not_found",
    "message": "Object not found",
    "code": "NoSuchKey",
}
NO_BUCKET = {
    "statusCode": "404",
    "error": "Bucket not found",
    "message": "Bucket not found",
    "code": "NoSuchBucket",
}
BAD_KEY = {
    "statusCode": "403",
    "error": "Unauthorized",
    "message": "Invalid Compact JWS",
    "code": "AccessDenied",
}


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass
class StoredObject:
    data: bytes
    mimetype: str = "application/octet-stream"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def etag(self) -> str:
        """S3's single-part eTag: the md5 of the bytes, in quotes."""
        return f'"{hashlib.md5(self.data).hexdigest()}"'

    def as_listed(self, name: str) -> dict[str, Any]:
        """One entry of list-v2's ``objects``, key for key as captured."""
        stamp = _iso(self.created)
        return {
            "id": self.id,
            "name": name,
            "metadata": {
                "eTag": self.etag,
                "size": len(self.data),
                "mimetype": self.mimetype,
                "cacheControl": "no-cache",
                "lastModified": stamp,
                "contentLength": len(self.data),
                "httpStatusCode": 200,
            },
            "updated_at": stamp,
            "created_at": stamp,
            "last_accessed_at": stamp,
        }


@dataclass
class _Fault:
    match: str
    status: int | None
    times: int
    body: bytes | dict[str, Any] | None
    delay: float | None
    after: int
    headers: dict[str, str] | None = None


class FakeStorage:
    """The fake server plus the knobs a test needs: contents, counters and injected faults.

    Use as a context manager; ``url`` is what ``supabase.create_client`` takes.
    ``validate_keys=False`` accepts any object name, as newer servers accept more than v1.11.2.
    """

    def __init__(
        self,
        service_key: str = SERVICE_KEY,
        anon_key: str = ANON_KEY,
        *,
        validate_keys: bool = True,
    ) -> None:
        self.service_key = service_key
        self.anon_key = anon_key
        self.validate_keys = validate_keys
        self.buckets: dict[str, dict[str, StoredObject]] = {}
        self.bucket_created: dict[str, datetime] = {}
        self.downloads: list[str] = []
        self.list_calls = 0
        self.list_bodies: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self._faults: list[_Fault] = []
        self._flaky: list[tuple[str, float, int, random.Random]] = []
        self.injected = 0
        """Faults ``flaky`` has injected so far."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: KillableServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FakeStorage:
        self._listen(0)
        return self

    def _listen(self, port: int) -> None:
        self._server = KillableServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # wakes handlers sleeping in an injected delay
        self.kill()

    def kill(self) -> None:
        """Stop listening, as a crashed server: connections are refused until ``revive``."""
        if self._server is not None:
            self._server.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def revive(self) -> None:
        """Listen again on the same port, with the same contents."""
        assert self._server is not None
        self._listen(self._server.server_address[1])

    @property
    def url(self) -> str:
        assert self._server is not None, "use FakeStorage as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- contents ----------------------------------------------------------------------------

    def create_bucket(self, name: str) -> None:
        with self._lock:
            self.buckets.setdefault(name, {})
            self.bucket_created.setdefault(name, datetime.now(UTC))

    def put(
        self, bucket: str, path: str, data: bytes, mimetype: str = "application/octet-stream"
    ) -> StoredObject:
        """Create or overwrite an object (creating the bucket too), as an upsert upload would."""
        if self.validate_keys and not (path and _VALID_KEY.match(path)):
            raise ValueError(f"Storage v1.11.2 refuses the object name {path!r} (InvalidKey)")
        self.create_bucket(bucket)
        obj = StoredObject(bytes(data), mimetype)
        with self._lock:
            self.buckets[bucket][path] = obj
        return obj

    def delete(self, bucket: str, path: str) -> None:
        with self._lock:
            self.buckets.get(bucket, {}).pop(path, None)

    # --- fault injection ---------------------------------------------------------------------

    def fail_next(
        self,
        match: str,
        status: int | None = 503,
        times: int = 1,
        body: bytes | dict[str, Any] | None = None,
        delay: float | None = None,
        *,
        after: int = 0,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``times`` requests whose path contains ``match`` misbehave, once ``after`` got through.

        They wait ``delay`` seconds, then answer ``status`` with ``body`` (a plain-text gateway
        page by default) and ``headers`` (e.g. ``Retry-After``); ``status=None`` answers
        normally after the delay, i.e. a slow server.
        """
        with self._lock:
            self._faults.append(_Fault(match, status, times, body, delay, after, headers))

    def flaky(self, match: str, share: float, status: int = 503, *, seed: int = 0) -> None:
        """From now on, each request whose path contains ``match`` fails with ``status`` with
        probability ``share`` (seeded, so a test sees the same faults every time)."""
        with self._lock:
            self._flaky.append((match, share, status, random.Random(seed)))

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for match, share, status, rng in self._flaky:
                if (match in path or match in unquote(path)) and rng.random() < share:
                    self.injected += 1
                    return _Fault(match, status, 1, None, None, 0)
            for fault in self._faults:
                if fault.match in path or fault.match in unquote(path):
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- the routes --------------------------------------------------------------------------

    def _role(self, headers: Any) -> str | None:
        """``service`` or ``anon`` when both auth headers carry a key we know, else None."""
        auth = headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if token is None or headers.get("apikey") != token:
            return None
        return {self.service_key: "service", self.anon_key: "anon"}.get(token)

    def record(self, method: str, path: str, body: bytes) -> None:
        """Count a request before anything (a fault included) answers it."""
        rest = [unquote(p) for p in path.split("/")][3:]
        with self._lock:
            self.requests.append((method, unquote(path)))
            if method == "POST" and rest[:2] == ["object", "list-v2"]:
                self.list_calls += 1
                self.list_bodies.append(json.loads(body or b"{}"))
            elif method == "GET" and len(rest) >= 3 and rest[0] == "object":
                self.downloads.append("/".join(rest[2:]))

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        """``(status, json, bytes or object)`` for one request that no fault intercepted."""
        parts = [unquote(p) for p in path.split("/")]
        if parts[:3] != ["", "storage", "v1"]:
            return 404, _route_not_found(method, path)
        role = self._role(headers)
        if role is None:
            return 400, BAD_KEY
        rest = parts[3:]
        if method == "POST" and len(rest) == 3 and rest[:2] == ["object", "list-v2"]:
            return 200, self._list_v2(rest[2], json.loads(body or b"{}"), role)
        if method == "GET" and len(rest) >= 3 and rest[0] == "object":
            with self._lock:
                found = self.buckets.get(rest[1], {}).get("/".join(rest[2:]))
            if found is None or role != "service":
                return 400, NOT_FOUND
            return 200, found
        if method == "GET" and len(rest) == 2 and rest[0] == "bucket":
            return self._bucket(rest[1], role)
        return 404, _route_not_found(method, path)

    def _bucket(self, name: str, role: str) -> tuple[int, Any]:
        created = self.bucket_created.get(name)
        if created is None or role != "service":
            return 400, NO_BUCKET
        stamp = _iso(created)
        return 200, {
            "id": name,
            "name": name,
            "owner": "",
            "public": False,
            "file_size_limit": None,
            "allowed_mime_types": None,
            "created_at": stamp,
            "updated_at": stamp,
        }

    def _list_v2(self, bucket: str, options: dict[str, Any], role: str) -> dict[str, Any]:
        prefix = options.get("prefix") or ""
        limit = int(options.get("limit") or 1000)
        after = _decode_cursor(options.get("cursor"))
        with self._lock:
            objects = dict(self.buckets.get(bucket, {})) if role == "service" else {}
        entries = list(_entries(objects, prefix, bool(options.get("with_delimiter"))))
        if after is not None:
            entries = [e for e in entries if e[0] > after and not _inside_folder(e[0], after)]
        page, more = entries[:limit], len(entries) > limit
        result: dict[str, Any] = {"hasNext": more}
        if more:
            last = page[-1][0]
            result["nextCursor"] = base64.b64encode(f"l:{last}".encode()).decode()
            result["nextCursorKey"] = last
        result["folders"] = [_folder(name, prefix) for name, obj in page if obj is None]
        result["objects"] = [obj.as_listed(name) for name, obj in page if obj is not None]
        return result


def _entries(
    objects: dict[str, StoredObject], prefix: str, delimited: bool
) -> Iterator[tuple[str, StoredObject | None]]:
    """``(name, object)`` sorted as Postgres' ``COLLATE "C"`` does; folders carry None."""
    seen: set[str] = set()
    for name in sorted(n for n in objects if n.startswith(prefix)):
        if delimited and "/" in name[len(prefix) :]:
            folder = prefix + name[len(prefix) :].split("/", 1)[0] + "/"
            if folder not in seen:
                seen.add(folder)
                yield folder, None
            continue
        yield name, objects[name]


def _inside_folder(name: str, cursor: str) -> bool:
    return cursor.endswith("/") and name.startswith(cursor)


def _folder(name: str, prefix: str) -> dict[str, Any]:
    return {
        "key": name[len(prefix) :].rstrip("/"),
        "name": name,
        "id": None,
        "updated_at": None,
        "created_at": None,
        "last_accessed_at": None,
        "metadata": None,
    }


def _decode_cursor(cursor: str | None) -> str | None:
    """The last key of the previous page; both captured forms (with and without ``\\no:asc``)."""
    if not cursor:
        return None
    text = base64.b64decode(cursor).decode()
    return text.split("\n", 1)[0].removeprefix("l:")


def _route_not_found(method: str, path: str) -> dict[str, Any]:
    return {"message": f"Route {method}:{path} not found", "error": "Not Found", "statusCode": 404}


def _handler_for(fake: FakeStorage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects of a real server
        disable_nagle_algorithm = True  # headers and body go out as two writes

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path
            fake.record(method, path, body)
            fault = fake._take_fault(path)
            if fault is not None and fault.delay:
                fake._stopping.wait(fault.delay)
            if fault is not None and fault.status is not None:
                payload = fault.body if fault.body is not None else b"upstream unavailable\n"
                self._send(fault.status, payload, fault.headers)
                return
            status, payload = fake.handle(method, path, self.headers, body)
            self._send(status, payload)

        def _send(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
            headers: dict[str, str] = {}
            if isinstance(payload, StoredObject):
                data = payload.data
                headers = {
                    "Content-Type": payload.mimetype,
                    "ETag": payload.etag,
                    "Last-Modified": format_datetime(payload.created, usegmt=True),
                    "Cache-Control": "no-cache",
                }
            elif isinstance(payload, bytes):
                data, headers = payload, {"Content-Type": "text/plain; charset=utf-8"}
            else:
                data = json.dumps(payload).encode()
                headers = {"Content-Type": "application/json; charset=utf-8"}
            try:
                self.send_response(status)
                for name, value in {**headers, **(extra or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. timed out) before the answer came

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest's output clean

    return Handler
