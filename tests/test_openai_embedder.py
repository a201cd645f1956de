"""The OpenAI embedder: the real ``openai`` client against a faithful local fake of the API.

Covers the pure batching and rate-budget arithmetic, decoding and dimensions, splitting of
over-long inputs, the error mapping (429 waited out inside ``embed``; 5xx, timeouts and refused
connections left to Tidal's task retries; 401/403/404 as ConfigError; 400 as PermanentError),
and that requests from many threads - and from two "workers" sharing Redis - never exceed the
budget in any rolling window, judged from the fake server's own request log.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import openai
import pytest
import redis

from tests.fakes.openai_server import FakeOpenAI
from tests.services import OwnRedis, free_port, shared_redis_url
from tidal.chunking import encoding
from tidal.embedders import Embedder
from tidal.embedders.base import QUICK
from tidal.embedders.batching import batch_by_tokens, fit_input, fold
from tidal.embedders.hashing import HashEmbedder
from tidal.embedders.openai import OpenAIEmbedder, _decode
from tidal.embedders.openai_limits import parse_duration, retry_delay
from tidal.embedders.ratelimit import RateBudget
from tidal.errors import ConfigError, PermanentError, TransientError
from tidal.redis import connect_redis
from tidal.settings import REPO_ROOT

REDIS_URL = shared_redis_url(1)  # not the one conftest's redis_url flushes
KEY = "sk-test-0123456789abcdef"
WINDOW = 2  # seconds: the rate tests shrink OpenAI's minute to keep the suite quick


def _tokens(text: str) -> int:
    return len(encoding().encode_ordinary(text))


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


def _embedder(api: FakeOpenAI, model: str = "text-embedding-3-small", **kwargs) -> OpenAIEmbedder:
    return OpenAIEmbedder(model, api_key=KEY, base_url=api.base_url, **kwargs)


# -- batching (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "max_inputs", "max_tokens", "expected"),
    [
        ([], 2048, 300_000, []),
        ([5], 2048, 300_000, [(0, 1)]),
        ([1] * 5, 2, 100, [(0, 2), (2, 4), (4, 5)]),
        ([3, 3, 3], 10, 6, [(0, 2), (2, 3)]),
        ([2, 2, 2], 10, 6, [(0, 3)]),  # exactly at the token cap
        ([6, 1, 6], 10, 6, [(0, 1), (1, 2), (2, 3)]),
        ([0, 0, 4, 0], 10, 4, [(0, 4)]),
        ([1] * 4097, 2048, 300_000, [(0, 2048), (2048, 4096), (4096, 4097)]),
        ([8191] * 40, 2048, 300_000, [(0, 36), (36, 40)]),  # 36 * 8191 = 294,876
    ],
)
def test_batch_by_tokens(counts, max_inputs, max_tokens, expected) -> None:
    batches = batch_by_tokens(counts, max_inputs=max_inputs, max_tokens=max_tokens)
    assert [(b.start, b.stop) for b in batches] == expected


@pytest.mark.parametrize("seed", range(5))
def test_batch_by_tokens_covers_in_order_within_caps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 50, size=300).tolist()
    batches = batch_by_tokens(counts, max_inputs=7, max_tokens=120)
    assert [i for b in batches for i in b] == list(range(300))
    for b in batches:
        assert 1 <= len(b) <= 7
        assert sum(counts[i] for i in b) <= 120
    for first, second in zip(batches, batches[1:], strict=False):  # greedy: each batch is full
        assert len(first) == 7 or sum(counts[i] for i in first) + counts[second.start] > 120


@pytest.mark.parametrize(
    ("counts", "kwargs"),
    [([1, 7, 1], {"max_tokens": 6}), ([1, -1], {}), ([1], {"max_inputs": 0})],
)
def test_batch_by_tokens_refuses_what_can_never_be_sent(counts, kwargs) -> None:
    with pytest.raises(ValueError):
        batch_by_tokens(counts, **kwargs)


def test_fit_input_keeps_a_short_text_whole() -> None:
    assert fit_input("a short design note", 8191) == ["a short design note"]


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("the checkout flow splits expenses. " * 3000, 8191),  # ~21k tokens: three pieces
        ("word " * 50, 16),
        ("旅行の費用を分割する。🙂🚀 " * 200, 16),  # multi-token characters: never cut inside one
        ("x" * 5000, 10),  # one unbroken run
    ],
)
def test_fit_input_splits_into_pieces_that_fit_and_cover_the_text(text: str, limit: int) -> None:
    pieces = fit_input(text, limit)
    assert len(pieces) > 1
    assert "".join(pieces) == text
    assert all(1 <= _tokens(p) <= limit for p in pieces)


def test_fit_input_refuses_a_limit_too_small_to_cut() -> None:
    with pytest.raises(ValueError):
        fit_input("anything", 4)


def test_fold_keeps_whole_texts_and_averages_a_split_ones_pieces_by_tokens() -> None:
    vectors = [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]]
    folded = fold(vectors, owners=[0, 1, 1, 2], counts=[5, 30, 10, 7], n=3)
    assert folded[0] == [1.0, 0.0] and folded[2] == [0.6, 0.8]
    np.testing.assert_allclose(folded[1], [0.0, 1.0])
    unit = fold([[1.0, 0.0], [0.0, 1.0]], owners=[0, 0], counts=[1, 1], n=1)[0]
    np.testing.assert_allclose(unit, [math.sqrt(0.5), math.sqrt(0.5)])


# -- the base: split, batch, send, fold for any provider (no server) ----------------------


def test_the_base_splits_batches_and_folds_for_a_provider_with_caps() -> None:
    """The hash provider with OpenAI-like caps, scaled down: the base alone decides what is
    sent; the provider only answers each batch."""
    embedder = HashEmbedder(dimension=4, max_input_tokens=16)
    embedder.max_batch_inputs = 3
    long_text = "word " * 40  # 40 tokens: three pieces of at most 16
    texts = ["alpha", long_text, "beta", "gamma"]
    vectors = embedder.embed(texts)

    sent = [t for batch in embedder.calls for t in batch]
    assert [len(batch) for batch in embedder.calls] == [3, 3]
    assert sent[0] == "alpha" and sent[-2:] == ["beta", "gamma"]
    pieces = sent[1:-2]
    assert len(pieces) == 3 and "".join(pieces) == long_text
    assert embedder.split_inputs == 1
    assert len(vectors) == 4 and all(len(v) == 4 for v in vectors)
    assert vectors[0] == embedder.send(["alpha"], 1)[0]
    weights = [_tokens(p) for p in pieces]
    mean = np.average(embedder.send(pieces, sum(weights)), axis=0, weights=weights)
    np.testing.assert_allclose(vectors[1], mean / np.linalg.norm(mean), rtol=1e-6)


def test_the_base_batches_by_tokens_and_names_the_cap_an_input_is_over() -> None:
    embedder = HashEmbedder()
    embedder.max_batch_tokens = 5
    embedder.token_cap_variable = "TIDAL_SOME_CAP"
    embedder.embed(["one two", "three four", "five six"])  # 2 tokens each
    assert [len(batch) for batch in embedder.calls] == [2, 1]
    with pytest.raises(ConfigError, match="per-request cap; raise TIDAL_SOME_CAP"):
        embedder.embed(["one two three four five six"])


def test_the_base_refuses_a_width_other_than_the_providers() -> None:
    class Narrow(HashEmbedder):
        def send(self, batch: list[str], tokens: int) -> list[list[float]]:
            return [vector[:3] for vector in super().send(batch, tokens)]

    with pytest.raises(ConfigError, match="answered 3-dimension vectors, not 4"):
        Narrow(dimension=4).embed(["x"])


def test_hashing_warms_up_without_a_request() -> None:
    embedder = HashEmbedder()
    assert isinstance(embedder, Embedder)
    embedder.warm_up(check=True)
    embedder.warm_up(check=False)
    assert embedder.calls == []


# -- rate budget (pure parts and sharing) --------------------------------------------------


def test_a_request_larger_than_the_tpm_is_a_config_error() -> None:
    budget = RateBudget(None, rpm=10, tpm=1000, namespace="t:huge")
    with pytest.raises(ConfigError, match="TIDAL_OPENAI_TPM"):
        budget.acquire(1001)


@pytest.mark.parametrize(("rpm", "tpm"), [(0, None), (None, 0), (-5, 100)])
def test_a_non_positive_limit_is_a_config_error(rpm, tpm) -> None:
    with pytest.raises(ConfigError):
        RateBudget(None, rpm=rpm, tpm=tpm)


def test_an_unlimited_budget_never_waits() -> None:
    budget = RateBudget(None, rpm=None, tpm=None, namespace="t:unlimited")
    assert all(budget.acquire(10**9) == 0 for _ in range(100))


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_two_budgets_on_one_namespace_share_it(where: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("redis_url") if where == "redis" else None
    exact = {"rpm": 3, "tpm": 100, "margin_seconds": 0}  # no margin: the arithmetic is exact
    worker_a = RateBudget(url, **exact, namespace=f"t:shared-{where}")
    worker_b = RateBudget(url, **exact, namespace=f"t:shared-{where}", max_wait=0.05)
    elsewhere = RateBudget(url, **exact, namespace=f"t:other-{where}", max_wait=0.05)
    worker_a.acquire(60)
    with pytest.raises(TransientError, match="budget"):
        worker_b.acquire(50)  # 60 + 50 > 100 tokens, whichever worker asks
    worker_b.acquire(40)
    worker_a.acquire(0)
    with pytest.raises(TransientError):
        worker_b.acquire(0)  # three requests spent between them
    elsewhere.acquire(100)  # another namespace is another budget
    worker_a.clear()


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_the_bucket_refills_and_keeps_its_margin(
    where: str, request: pytest.FixtureRequest
) -> None:
    """60 tokens per 60 s is one token a second; a 1 s margin keeps one token's worth unspent.
    The request limit is charged in the same step: a refused token charge costs no request."""
    url = request.getfixturevalue("redis_url") if where == "redis" else None
    budget = RateBudget(url, rpm=3, tpm=60, namespace=f"t:margin-{where}", max_wait=0.05)
    budget.acquire(59)  # a full bucket less the margin
    with pytest.raises(TransientError):
        budget.acquire(2)  # needs two more seconds of refill
    budget.acquire(0)  # the refused request was not charged: this is the second
    with pytest.raises(TransientError):
        budget.acquire(0)  # 3 RPM less a 1 s margin: the third waits a second
    patient = RateBudget(url, rpm=None, tpm=60, namespace=f"t:margin2-{where}", max_wait=5)
    slept: list[float] = []
    patient.sleep = slept.append
    started = time.monotonic()
    patient.acquire(59)
    waited = patient.acquire(1)  # one token refills in a second, less the time since
    assert 1 - (time.monotonic() - started) <= waited <= 1.02 and slept == [waited]


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_request_over_the_bucket_less_its_margin_waits_for_a_full_bucket(
    where: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if where == "redis" else None
    budget = RateBudget(url, rpm=None, tpm=10, namespace=f"t:big-{where}", window_seconds=2,
                        margin_seconds=0.5, max_wait=10)  # fmt: skip
    budget.sleep = lambda seconds: None
    assert budget.acquire(10) == 0  # the whole bucket, full for longer than the margin
    started = time.monotonic()
    waited = budget.acquire(10)  # refill 2 s, plus the margin, less the time since
    assert 2.5 - (time.monotonic() - started) <= waited <= 2.52


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_large_request_gets_its_turn_among_small_ones_that_keep_the_bucket_busy(
    where: str, request: pytest.FixtureRequest
) -> None:
    """Turns are served in order: three threads sending small requests back to back never
    starve one that needs most of the bucket (before, it waited for a refill the small ones
    kept taking, until its max wait ran out)."""
    url = request.getfixturevalue("redis_url") if where == "redis" else None
    limits = {"rpm": None, "tpm": 1000, "namespace": f"t:fair-{where}", "window_seconds": 2,
              "margin_seconds": 0}  # fmt: skip
    budget, large = RateBudget(url, **limits), RateBudget(url, **limits)  # one bucket
    budget.clear()
    stop = threading.Event()
    budget.sleep = stop.wait  # the small ones wait for real, until the test is over
    large.sleep = lambda seconds: None  # the large one's wait is what the test reads

    def small() -> None:
        while not stop.is_set():
            budget.acquire(20)

    others = [threading.Thread(target=small) for _ in range(3)]
    for t in others:
        t.start()
    try:
        time.sleep(1)  # the bucket is drained (50 at once) and the small ones take each refill
        waited = large.acquire(900)
    finally:
        stop.set()
        for t in others:
            t.join(timeout=30)
    assert 1 < waited <= 1.8 + 3 * 0.04 + 0.02  # the refill of 900 tokens, and 3 small ones


def test_a_429_within_the_budget_lowers_the_shared_rate_to_what_the_server_let_through(
    redis_url: str,
) -> None:
    """Two processes' budgets on one Redis: a 429 seen by one slows both, to 90 % of the
    requests answered over the last window; a second 429 within the window changes
    nothing (it says nothing new), and the rate recovers after a quiet window."""
    window = 1.0  # and one window to recover: the rate doubles each quiet second after one
    limits = {"rpm": 100, "tpm": None, "namespace": "t:learn", "window_seconds": window,
              "margin_seconds": 0.1, "recover_windows": 1}  # fmt: skip
    one, other = RateBudget(redis_url, **limits), RateBudget(redis_url, **limits)
    one.clear()
    for _ in range(10):
        one.calibrate(None, None, age=0, answered_tokens=5)
    assert one.slow_down(("requests",)) == pytest.approx((0.09, 1.0))
    assert other.scales() == pytest.approx((0.09, 1.0))
    before = time.monotonic()
    assert other.slow_down(("requests",)) == pytest.approx((0.09, 1.0))  # too soon: unchanged
    after = time.monotonic()
    time.sleep(2 * window)  # a quiet window, then one recovery period: about doubled
    read_from = time.monotonic()
    scale = other.scales()[0]
    quiet = (read_from - after - window, time.monotonic() - before - window)
    assert 0.09 * 2 ** quiet[0] - 1e-3 <= scale <= 0.09 * 2 ** quiet[1] + 1e-3, (scale, quiet)
    one.clear()


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_calibration_only_ever_drains(where: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("redis_url") if where == "redis" else None
    budget = RateBudget(url, rpm=100, tpm=1000, namespace=f"t:cal-{where}", max_wait=0.05,
                        margin_seconds=0)  # fmt: skip
    budget.acquire(500)
    budget.calibrate(5000, 5000, age=0.0)  # the server has more left: ignored
    with pytest.raises(TransientError):
        budget.acquire(501)
    budget.calibrate(None, 100, age=0.0)  # the server has less left: drained to it
    with pytest.raises(TransientError):
        budget.acquire(200)
    budget.acquire(100)
    budget.calibrate(0, None, age=0.0)  # no request left on the server: none here
    with pytest.raises(TransientError):
        budget.acquire(0)


def test_a_redis_that_does_not_answer_at_start_up_is_a_config_error_naming_it() -> None:
    port = free_port()
    with pytest.raises(ConfigError, match="TIDAL_REDIS_URL") as caught:
        RateBudget(f"redis://:hunter2@127.0.0.1:{port}/0", rpm=5, tpm=100)
    assert "hunter2" not in str(caught.value) and ":***@" in str(caught.value)
    assert "the OpenAI budget every worker shares lives there" in str(caught.value)


def test_connect_redis_answers_a_pinged_client_or_names_the_variable(redis_url: str) -> None:
    client = connect_redis(redis_url, timeout=5)
    try:
        assert client.ping()
    finally:
        client.close()
    nowhere = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigError, match="TIDAL_REDIS_URL .* does not answer") as caught:
        connect_redis(nowhere, timeout=1)
    assert "hunter2" not in str(caught.value) and "lives there" not in str(caught.value)


def test_a_redis_that_dies_mid_run_is_waited_out_then_a_service_down(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Its own redis-server on a free port, stopped under a live budget: back within the
    outage limit, the waiting request goes on; gone past it, the run stops naming it."""
    from tidal.errors import ServiceDown

    redis_server = OwnRedis(tmp_path)
    try:
        budget = RateBudget(redis_server.url, rpm=500, tpm=10_000, outage_seconds=30)
        assert budget.acquire(1) == 0.0
        redis_server.stop()
        threading.Timer(2.0, redis_server.start).start()
        started = time.monotonic()
        assert budget.acquire(1) == 0.0  # waited at the gate, then charged
        assert time.monotonic() - started > 1.5
    finally:
        redis_server.stop()
    budget._store.service.outage_seconds = 1.0  # type: ignore[attr-defined]
    started = time.monotonic()
    with pytest.raises(ServiceDown, match="TIDAL_REDIS_URL"):
        budget.acquire(1)
    assert time.monotonic() - started < 10


# -- retry hints (pure) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("20ms", 0.02),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("2", 2.0),
        ("", None),
        (None, None),
        ("soon", None),
    ],
)
def test_parse_duration(value, seconds) -> None:
    assert parse_duration(value) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "250", "retry-after": "3"}, 0.25),
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "120ms",
                "x-ratelimit-remaining-tokens": "900",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            0.12,
        ),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "3s"}, 3.0),
        ({}, None),
    ],
)
def test_retry_delay(headers, seconds) -> None:
    assert retry_delay(headers) == (pytest.approx(seconds) if seconds is not None else None)


# -- embedding -----------------------------------------------------------------------------


def test_vectors_decode_to_the_servers_float32_values(api: FakeOpenAI) -> None:
    embedder = _embedder(api)
    texts = ["onboarding flow", "split expenses", "offline maps"]
    vectors = embedder.embed(texts)
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dimension, embedder.max_input_tokens) == (
        "openai:text-embedding-3-small",
        1536,
        8191,
    )
    assert vectors == [FakeOpenAI.vector(t) for t in texts]
    assert all(math.isclose(np.linalg.norm(v), 1.0, rel_tol=1e-5) for v in vectors)
    [call] = api.requests
    assert call["encoding_format"] == "base64"  # what the SDK sends by default, too
    assert call["dimensions"] is None  # not sent unless asked for
    assert (call["inputs"], call["tokens"]) == (3, sum(map(_tokens, texts)))


def test_an_empty_list_makes_no_request(api: FakeOpenAI) -> None:
    assert _embedder(api).embed([]) == []
    assert api.requests == []


def test_dimensions_are_passed_through_and_named(api: FakeOpenAI) -> None:
    embedder = _embedder(api, dimensions=256)
    [vector] = embedder.embed(["pricing page"])
    assert (embedder.name, embedder.dimension) == ("openai:text-embedding-3-small@256", 256)
    assert api.requests[0]["dimensions"] == 256
    assert vector == FakeOpenAI.vector("pricing page", 1536, 256)


def test_a_known_model_needs_no_probe() -> None:
    with FakeOpenAI(api_key=KEY, dimension=3072) as api:
        embedder = _embedder(api, "text-embedding-3-large")
        assert embedder.dimension == 3072
        assert api.requests == []
        assert len(embedder.embed(["x"])[0]) == 3072


def test_an_unknown_model_is_probed_once_for_its_dimension() -> None:
    with FakeOpenAI(api_key=KEY, dimension=384) as api:
        embedder = _embedder(api, "bge-small-en")
        assert (embedder.name, embedder.dimension) == ("openai:bge-small-en", 384)
        assert len(api.requests) == 1
        assert embedder.embed(["y"]) == [FakeOpenAI.vector("y", 384)]


def test_a_server_answering_another_width_is_a_config_error() -> None:
    with (
        FakeOpenAI(api_key=KEY, dimension=768) as api,
        pytest.raises(ConfigError, match="TIDAL_EMBEDDING_DIMENSIONS"),
    ):
        _embedder(api).embed(["z"])  # claims text-embedding-3-small, answers 768 wide


def test_decode_accepts_floats_from_a_server_that_ignores_the_format() -> None:
    data = [
        SimpleNamespace(index=1, embedding=[0.5, 0.5]),
        SimpleNamespace(index=0, embedding=[1, 0]),
    ]
    assert _decode(data, 2) == [[1.0, 0.0], [0.5, 0.5]]
    with pytest.raises(TransientError):
        _decode(data, 3)


def test_batches_respect_the_input_cap() -> None:
    with FakeOpenAI(api_key=KEY, dimension=8) as api:
        embedder = _embedder(api, "tiny")  # probed: 8 wide keeps 4097 vectors cheap
        texts = [f"note {i}" for i in range(4097)]
        vectors = embedder.embed(texts)
        assert [r["inputs"] for r in api.requests[1:]] == [2048, 2048, 1]
        assert vectors[4096] == FakeOpenAI.vector("note 4096", 8)
        assert api.inputs_embedded[1:] == texts


def test_batches_respect_small_caps(api: FakeOpenAI) -> None:
    texts = [f"requirement number {i} of the travel app" for i in range(10)]
    per_text = max(map(_tokens, texts))
    embedder = _embedder(api, max_batch_inputs=4, max_batch_tokens=3 * per_text)
    assert embedder.embed(texts) == [FakeOpenAI.vector(t) for t in texts]
    assert [r["inputs"] for r in api.requests] == [3, 3, 3, 1]
    assert all(r["tokens"] <= 3 * per_text for r in api.requests)


def test_an_over_long_text_is_split_and_folded_into_one_vector(
    api: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    long_text = "The itinerary planner syncs offline maps for every traveller. " * 800
    assert _tokens(long_text) > 8191
    embedder = _embedder(api)
    vectors = embedder.embed(["before", long_text, "after"])
    assert len(vectors) == 3
    pieces = api.inputs_embedded[1:-1]
    assert len(pieces) >= 2 and "".join(pieces) == long_text
    assert all(_tokens(p) <= 8191 for p in pieces)
    weights = [_tokens(p) for p in pieces]
    mean = np.average([FakeOpenAI.vector(p) for p in pieces], axis=0, weights=weights)
    np.testing.assert_allclose(vectors[1], mean / np.linalg.norm(mean), rtol=1e-6, atol=1e-7)
    assert vectors[0] == FakeOpenAI.vector("before") and vectors[2] == FakeOpenAI.vector("after")
    assert embedder.split_inputs == 1
    assert "embedding it as" in caplog.text


def test_batches_are_split_to_fit_a_small_token_budget(api: FakeOpenAI) -> None:
    texts = ["alpha beta gamma delta", "epsilon zeta eta theta"]  # 4 and 5 tokens
    budget = RateBudget(
        None, rpm=None, tpm=7, namespace="t:split", window_seconds=1, margin_seconds=0
    )
    embedder = _embedder(api, budget=budget)
    assert embedder.embed(texts) == [FakeOpenAI.vector(t) for t in texts]
    assert [r["inputs"] for r in api.requests] == [1, 1]  # one 9-token batch could never fit
    with pytest.raises(ConfigError, match="TIDAL_OPENAI_TPM"):
        embedder.embed(["word " * 20])
    assert len(api.requests) == 2


def test_an_empty_text_is_permanent_and_sends_nothing(api: FakeOpenAI) -> None:
    with pytest.raises(PermanentError, match="empty"):
        _embedder(api).embed(["fine", ""])
    assert api.requests == []


# -- what the fake itself refuses (so the tests above prove the caps matter) ---------------


@pytest.mark.parametrize(
    "inputs",
    [["x"] * 2049, ["word " * 8200], ["word " * 8000] * 40, [""]],
    ids=["2049-inputs", "8200-token-input", "320k-tokens", "empty"],
)
def test_the_fake_refuses_what_openai_refuses(api: FakeOpenAI, inputs: list[str]) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=api.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input=inputs)
    assert caught.value.body["message"]


def test_the_fake_sends_openais_rate_limit_headers(api: FakeOpenAI) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=api.base_url, max_retries=0)
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi")
    for kind in ("requests", "tokens"):
        for field in ("limit", "remaining", "reset"):
            assert raw.headers[f"x-ratelimit-{field}-{kind}"]
    assert raw.parse().data[0].embedding == FakeOpenAI.vector("hi")  # the SDK's own decoding


# -- errors --------------------------------------------------------------------------------


def test_a_429_with_retry_after_is_waited_out(api: FakeOpenAI) -> None:
    embedder = _embedder(api)
    waits: list[float] = []
    embedder.service.sleep = waits.append  # recorded, not slept
    api.fail_next(429, headers={"retry-after": "1"})
    texts = ["first", "second"]
    assert embedder.embed(texts) == [FakeOpenAI.vector(t) for t in texts]
    assert api.statuses() == [429, 200]
    assert waits == [1.0]
    assert api.inputs_embedded == texts


@pytest.mark.parametrize(
    "headers",
    [
        None,  # the fake's default: retry-after: 1 and retry-after-ms: 1000
        {"retry-after-ms": "150"},
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "150ms"},
        {},  # no hint at all: backoff
    ],
)
def test_a_429_is_retried_on_any_hint(api: FakeOpenAI, headers) -> None:
    embedder = _embedder(api)
    embedder.service.sleep = lambda seconds: None  # the waits are the next tests'
    api.fail_next(429, times=2, headers=headers)
    assert embedder.embed(["a"]) == [FakeOpenAI.vector("a")]
    assert api.statuses() == [429, 429, 200]


def test_429s_never_spend_an_attempt_however_many_and_however_long(api: FakeOpenAI) -> None:
    """A 429 is "later": 20 of them, then one asking for longer than the old quick wait, are
    all waited out inside one call."""
    api.fail_next(429, times=20, headers={"retry-after-ms": "5"})
    api.fail_next(429, headers={"retry-after": "2"})
    embedder = _embedder(api)
    waits: list[float] = []
    embedder.service.sleep = waits.append  # recorded, not slept
    assert embedder.embed(["a"]) == [FakeOpenAI.vector("a")]
    assert api.statuses() == [429] * 21 + [200]
    assert waits == [0.005] * 20 + [2.0]


def test_429s_that_never_end_stop_the_run_after_the_outage_limit(api: FakeOpenAI) -> None:
    from tidal.errors import ServiceDown

    embedder = _embedder(api, outage_seconds=1.5)
    api.fail_next(429, times=10**6, headers={"retry-after-ms": "100"})
    started = time.monotonic()
    with pytest.raises(ServiceDown, match="let no request through for 1.5 s"):
        embedder.embed(["a"])
    assert 1.2 < time.monotonic() - started < 5


def test_an_exhausted_quota_is_a_config_error_not_retried(api: FakeOpenAI) -> None:
    api.fail_next(
        429, message="You exceeded your current quota, please check your plan and billing.",
        code="insufficient_quota",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="quota"):
        _embedder(api).embed(["a"])
    assert api.statuses() == [429]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_retried_quickly_by_that_batch_alone(
    api: FakeOpenAI, status: int
) -> None:
    """Three batches, the first answered 5xx twice: only it is sent again, inside ``embed``;
    the batches already bought are kept."""
    embedder = _embedder(api, max_batch_inputs=2)
    api.fail_next(status, times=2)  # the next two requests: the first batch's first tries
    texts = ["a", "b", "c", "d", "e"]
    assert embedder.embed(texts) == [FakeOpenAI.vector(t) for t in texts]
    assert api.statuses() == [status, status, 200, 200, 200]
    assert api.inputs_embedded == texts  # every text bought once


def test_a_500_that_persists_is_transient_after_the_quick_retries(api: FakeOpenAI) -> None:
    """A 500 is an answer: the API is up and this request fails. The task's retry decides."""
    embedder = _embedder(api)
    embedder.service.sleep = lambda seconds: None
    embedder.embed(["up"])
    api.fail_next(500, times=100)
    with pytest.raises(TransientError, match="HTTP 500"):
        embedder.embed(["f"])
    assert api.statuses()[1:] == [500] * QUICK.attempts


@pytest.mark.parametrize("status", [502, 503])
def test_an_api_answering_only_502_or_503_is_an_outage_waited_out(
    api: FakeOpenAI, status: int
) -> None:
    """Every request a gateway error, the probe's too: the API is down. The call waits, one
    probe at a time with backoff, and carries on when it answers, having spent no attempt."""
    embedder = _embedder(api)
    embedder.embed(["up"])  # it answered once: an outage, not a wrong address
    api.fail_next(status, times=3)  # the call, the probe that finds it down, one probe more
    assert embedder.embed(["f"]) == [FakeOpenAI.vector("f")]
    assert api.statuses()[1:] == [status] * 3 + [200, 200]  # the probe that found it, then f
    assert embedder.service.outages == 1


def test_a_wrong_key_is_a_config_error_naming_the_variable_not_the_key(api: FakeOpenAI) -> None:
    wrong = "sk-wrong-4f1c2e9a7b"
    with pytest.raises(ConfigError) as caught:
        OpenAIEmbedder(api_key=wrong, base_url=api.base_url).embed(["a"])
    message = str(caught.value)
    assert "OPENAI_API_KEY" in message and "Incorrect API key" in message
    assert wrong not in message
    assert api.statuses() == [401]  # no retries


def test_a_key_echoed_in_full_by_a_compatible_server_is_redacted(api: FakeOpenAI) -> None:
    api.fail_next(401, message=f"key {KEY} is not valid")
    with pytest.raises(ConfigError) as caught:
        _embedder(api).embed(["a"])
    assert KEY not in str(caught.value) and "***" in str(caught.value)


def test_a_wrong_key_fails_at_start_up_when_probing(api: FakeOpenAI) -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIEmbedder("bge-small-en", api_key="sk-nope-123456789", base_url=api.base_url)


def test_a_forbidden_key_is_a_config_error(api: FakeOpenAI) -> None:
    api.fail_next(403)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        _embedder(api).embed(["a"])


def test_an_unknown_model_is_a_config_error(api: FakeOpenAI) -> None:
    api.fail_next(404, message="The model `text-embedding-9` does not exist.")
    with pytest.raises(ConfigError, match="TIDAL_EMBEDDING_MODEL"):
        _embedder(api).embed(["a"])


def test_a_bad_request_is_permanent_with_the_servers_message(api: FakeOpenAI) -> None:
    api.fail_next(400, message="'$.input' is invalid: something specific")
    with pytest.raises(PermanentError, match="something specific") as caught:
        _embedder(api).embed(["a"])
    assert not isinstance(caught.value, ConfigError)
    with pytest.raises(PermanentError, match="does not support specifying dimensions"):
        _embedder(api, "text-embedding-ada-002", dimensions=256).embed(["a"])


def test_a_timeout_is_retried_quickly_then_transient(api: FakeOpenAI) -> None:
    embedder = _embedder(api, timeout=0.3)
    embedder.service.sleep = lambda seconds: None  # between tries: only the timeouts are waited
    api.delay_next(1.5)
    assert embedder.embed(["a"]) == [FakeOpenAI.vector("a")]
    api.delay_next(1.5, times=100)
    with pytest.raises(TransientError, match="no answer"):
        embedder.embed(["a"])


def test_a_refused_connection_at_start_up_fails_fast_as_transient() -> None:
    """An API that never answered is a wrong address, not an outage: not waited for."""
    port = free_port()
    embedder = OpenAIEmbedder(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1")
    waits: list[float] = []
    embedder.service.sleep = waits.append  # recorded, not slept
    with pytest.raises(TransientError, match="could not reach"):
        embedder.embed(["a"])
    assert len(waits) == QUICK.attempts - 1 and sum(waits) < QUICK.total  # quick tries only


def test_a_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIEmbedder(api_key="")


# -- the budget under contention, judged by the server -------------------------------------


def _hammer(embedders: list[OpenAIEmbedder], threads_each: int, calls: int, texts: list[str]):
    """Every embedder gets ``threads_each`` threads, each calling ``embed`` ``calls`` times."""
    errors: list[BaseException] = []

    def work(embedder: OpenAIEmbedder) -> None:
        try:
            for _ in range(calls):
                assert embedder.embed(texts) == [FakeOpenAI.vector(t) for t in texts]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [
        threading.Thread(target=work, args=(e,)) for e in embedders for _ in range(threads_each)
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in workers)


def test_threads_never_exceed_the_request_budget(api: FakeOpenAI) -> None:
    budget = RateBudget(None, rpm=5, tpm=None, namespace="t:rpm", window_seconds=WINDOW)
    api.limit(rpm=5, window_seconds=WINDOW, model="bucket")  # 429 if the budget leaked
    _hammer([_embedder(api, budget=budget)], threads_each=3, calls=3, texts=["a", "b"])
    assert api.statuses() == [200] * 9


def test_threads_never_exceed_the_token_budget(api: FakeOpenAI) -> None:
    texts = ["the quick brown fox jumps over", "the lazy dog"]
    per_call = sum(map(_tokens, texts))
    tpm = 3 * per_call + per_call // 2  # room for three and a half requests
    budget = RateBudget(None, rpm=None, tpm=tpm, namespace="t:tpm", window_seconds=WINDOW)
    api.limit(tpm=tpm, window_seconds=WINDOW, model="bucket")
    _hammer([_embedder(api, budget=budget)], threads_each=3, calls=2, texts=texts)
    assert api.statuses() == [200] * 6


def test_two_workers_on_one_redis_share_one_budget(api: FakeOpenAI, redis_url: str) -> None:
    """Two RateBudget instances, as two machines would hold, each with two threads."""
    workers = [
        _embedder(
            api,
            budget=RateBudget(
                redis_url, rpm=5, tpm=10_000, namespace="t:two", window_seconds=WINDOW
            ),
        )
        for _ in range(2)
    ]
    api.limit(rpm=5, window_seconds=WINDOW, model="bucket")
    _hammer(workers, threads_each=2, calls=2, texts=["shared", "budget"])
    assert api.statuses() == [200] * 8


def test_without_a_budget_the_same_load_trips_the_servers_limit(api: FakeOpenAI) -> None:
    """The control for the three tests above: the load they use does exceed the limit."""
    api.limit(rpm=5, window_seconds=WINDOW, model="bucket")
    _hammer([_embedder(api)], threads_each=3, calls=3, texts=["a", "b"])  # 429s waited out
    assert 429 in api.statuses()


def test_a_budget_binding_on_tokens_keeps_the_servers_bucket_busy(api: FakeOpenAI) -> None:
    """Three times the TPM through three threads against a refilling server bucket: nothing
    refused, and the server's bucket never sat full (its refill thrown away) for more than a
    fraction of a window (``FakeOpenAI.full_seconds``): the run paces at the refill rate, the
    floor."""
    texts = [f"the itinerary planner keeps offline maps for traveller {i}" for i in range(90)]
    tpm = sum(map(_tokens, texts)) // 3
    budget = RateBudget(None, rpm=None, tpm=tpm, namespace="t:floor", window_seconds=WINDOW,
                        margin_seconds=0.25)  # fmt: skip
    api.limit(tpm=tpm, window_seconds=WINDOW, model="bucket")
    embedder = _embedder(api, budget=budget, max_batch_inputs=5)
    _hammer([embedder], threads_each=3, calls=1, texts=texts[:30])
    _hammer([embedder], threads_each=3, calls=1, texts=texts[30:60])
    assert api.statuses() == [200] * len(api.requests)
    assert sum(r["tokens"] for r in api.requests) > 2 * tpm
    assert api.full_seconds["tokens"] < WINDOW / 4


def test_threads_and_another_process_on_one_redis_never_overdraw_the_bucket(
    api: FakeOpenAI, redis_url: str
) -> None:
    """A second process (its own budget, two threads) and this one (two threads), both
    limits binding, against a refilling server bucket: at most one 429 in all."""
    limits = {"rpm": 8, "tpm": 150, "namespace": "t:procs", "window_seconds": WINDOW}
    api.limit(rpm=8, tpm=150, window_seconds=WINDOW, model="bucket")
    script = f"""
import threading
from tests.fakes.openai_server import FakeOpenAI
from tidal.embedders.openai import OpenAIEmbedder
from tidal.embedders.ratelimit import RateBudget
budget = RateBudget({redis_url!r}, **{limits!r})
embedder = OpenAIEmbedder(api_key={KEY!r}, base_url={api.base_url!r}, budget=budget)
def work(n):
    for i in range(5):
        texts = [f"other process {{n}} {{i}} {{j}} of the shared budget" for j in range(3)]
        assert embedder.embed(texts) == [FakeOpenAI.vector(t) for t in texts]
threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
"""
    other = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)  # imports tests.fakes
    here = _embedder(api, budget=RateBudget(redis_url, **limits))
    _hammer([here], threads_each=2, calls=5, texts=["this process", "shares", "the budget"])
    assert other.wait(timeout=120) == 0
    statuses = api.statuses()
    assert statuses.count(200) == 20 and statuses.count(429) <= 1
    assert sum(r["tokens"] for r in api.requests) > 2 * 150  # both limits did bind


def test_an_api_that_cannot_be_reached_stops_the_run_at_its_check() -> None:
    """Connection refused through every quick retry: not a file's failure, the run's."""
    from tests.flowkit import counts
    from tidal.chunking import ChunkingOptions
    from tidal.errors import ServiceDown
    from tidal.pipeline import Pipeline
    from tidal.run import IngestRun, run_in_threads
    from tidal.sources.memory import MemorySource
    from tidal.store.memory import MemoryStore

    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    embedder = OpenAIEmbedder(api_key=KEY, base_url=nowhere)
    embedder.service.sleep = lambda seconds: None  # between its quick tries
    with pytest.raises(ServiceDown, match="OPENAI_BASE_URL"):
        embedder.check()
    files = {f"prds/note-{i}.md": f"# Note {i}\n\nBody {i}.\n".encode() for i in range(30)}
    store = MemoryStore()
    pipeline = Pipeline(
        source=MemorySource(files),
        embedder=embedder,
        store=store,
        chunking=ChunkingOptions(64, 8),
    )

    summary = run_in_threads(IngestRun(pipeline), concurrency=4)

    assert summary.counts == counts(stopped=30)
    assert summary.stopped and "could not reach" in summary.stopped
    assert store.failed_files() == []  # not one file blamed for it


def test_a_passed_check_stands_for_a_minute_and_a_second_caller_waits_for_the_first(
    api: FakeOpenAI,
) -> None:
    """``python flows/ingest.py`` checks on its warm-up thread while the flow run is created;
    the flow's own check then costs no second round trip."""
    embedder = _embedder(api)
    api.delay_next(0.5)  # the first check is still in flight when the second caller comes
    first = threading.Thread(target=embedder.check)
    first.start()
    embedder.check()
    first.join()
    embedder.check()

    assert len(api.requests) == 1


def test_a_failed_check_costs_one_request_per_run_and_is_asked_again_later(
    api: FakeOpenAI,
) -> None:
    embedder = _embedder(api)
    api.fail_next(401)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        embedder.check()  # the warm-up's check
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        embedder.check()  # the flow's, moments later: no second request
    assert api.statuses() == [401]
    embedder.failed_check_seconds = 0  # later (a long-lived worker's next run)
    embedder.check()  # the key works again: asked, and passed

    assert api.statuses() == [401, 200]


def test_warm_up_opens_the_client_and_checks_only_when_asked(api: FakeOpenAI) -> None:
    embedder = _embedder(api)
    assert isinstance(embedder, Embedder)
    embedder.warm_up(check=False)
    assert embedder._opened is not None and api.requests == []
    embedder.warm_up(check=True)
    embedder.warm_up(check=True)  # a passed check stands: no second request
    assert api.statuses() == [200]


def test_warm_up_raises_what_the_check_raises(api: FakeOpenAI) -> None:
    api.fail_next(401)
    embedder = _embedder(api)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        embedder.warm_up(check=True)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        embedder.check()  # the flow's own check, answered from the warm-up's
    assert api.statuses() == [401]


def test_the_sdk_is_imported_only_for_a_request(api: FakeOpenAI) -> None:
    """An unchanged run opens its embedder but sends nothing: it never pays for the import."""
    code = (
        "import sys; from tidal.embedders import open_embedder; from tidal.settings import "
        "load_settings; e = open_embedder(load_settings()); e.count_tokens(['counted']);"
        "print('openai' in sys.modules); e.check(); print('openai' in sys.modules)"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "TIDAL_EMBEDDER": "openai",
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": api.base_url,
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "True"]
    assert len(api.requests) == 1
