"""The local model's forward pass in numpy, for embedding a query without torch.

A search embeds one short text. sentence-transformers would first import torch and
transformers and build the model, seconds before the query; this module reads the same weights
(``model.safetensors``) and the same tokenizer (``tokenizer.json``) and runs the same
computation in numpy: a BERT encoder, mean pooling over the tokens, L2 normalisation. Its
vectors are the ones ``LocalEmbedder`` stores, to float32 rounding, which is what lets a query
embedded here be compared with the chunks embedded there.

Only that architecture is implemented. ``QueryEmbedder`` reads the model's config files and the
weights' header first (``tidal.embedders.local_model``) and raises ``UnsupportedModel`` for
anything else (another encoder, activation or pooling, a Dense layer, half-precision weights):
``open_query_embedder`` then falls back to ``LocalEmbedder``, slower but right, rather than
compute a different model.

The ingest keeps sentence-transformers: it encodes many texts at once on torch's threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tidal.embedders.catalog import DEFAULTS
from tidal.embedders.local_model import (
    IMPLEMENTED,
    UnsupportedModel,
    check_weights,
    read_spec,
    read_weights,
    tokenizer,
)


@dataclass(frozen=True)
class _Loaded:
    weights: dict[str, np.ndarray]
    tokenizer: Any
    one_blas_thread: Callable[[], AbstractContextManager[object]]


class QueryEmbedder:
    """An ``Embedder`` for a few texts at a time (a search's query), in numpy.

    Same name, width and input limit as the ``LocalEmbedder`` of the same model, so a search
    opens the same store with it. The model is checked when this is made (UnsupportedModel),
    then read in a background thread: a search opens its database meanwhile, and the first
    ``embed`` waits for whatever is left. Each text is encoded on its own, unpadded: a query is
    one text, and without padding there is no attention mask to get wrong.
    """

    def __init__(self, model: str = DEFAULTS["local"].model) -> None:
        from tidal.embedders.local import _model_path

        path = _model_path(model)
        self.name = f"local:{Path(model).name}"
        self._spec = spec = read_spec(path)
        self.dimension = spec.hidden
        self.max_input_tokens = spec.max_tokens
        names = check_weights(path / "model.safetensors", spec)
        self._loaded: _Loaded | None = None
        self._failed: BaseException | None = None
        # Held by each call: a fast tokenizer refuses two threads at once ("Already borrowed").
        self._lock = threading.Lock()
        # Not a daemon: one stopped mid-read as the interpreter exits (a search that never
        # embeds, ``--mode text``) takes the process down with it (glibc's forced unwind through
        # the Rust readers), so an exit waits for the read instead.
        self._loader = threading.Thread(
            target=self._load, args=(path, names), name="tidal-query-model", daemon=False
        )
        self._loader.start()

    def _load(self, path: Path, names: dict[str, str]) -> None:
        try:
            self._loaded = _Loaded(
                read_weights(path / "model.safetensors", names),
                tokenizer(path / "tokenizer.json", self.max_input_tokens),
                _one_blas_thread(),
            )
        except BaseException as exc:  # noqa: BLE001 - raised by the embed that waits for it
            self._failed = exc

    def _ready(self) -> _Loaded:
        self._loader.join()
        if self._loaded is None:
            assert self._failed is not None
            raise self._failed
        return self._loaded

    def check(self) -> None:
        """Nothing to ask: the model was checked when this was made."""

    def warm_up(self, *, check: bool) -> None:
        """Wait until the weights are read. Raises what reading them raised."""
        self._ready()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in the model's tokenizer, special tokens included, untruncated."""
        if not texts:
            return []
        tokenizer = self._ready().tokenizer
        with self._lock:
            tokenizer.no_truncation()
            try:
                return [len(e.ids) for e in tokenizer.encode_batch(list(texts))]
            finally:
                tokenizer.enable_truncation(self.max_input_tokens)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length float32 vector per text; a text past the model's input limit is
        truncated to it, as sentence-transformers truncates it."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        loaded = self._ready()
        # One query at a time: the BLAS limit is the process's, and two overlapping limits
        # would restore each other's setting out of order.
        with self._lock, loaded.one_blas_thread():
            encoded = loaded.tokenizer.encode_batch(list(texts))
            return np.stack([self._encode(loaded.weights, np.asarray(e.ids)) for e in encoded])

    def _encode(self, w: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
        """What BertModel computes for one unpadded sequence in eval mode (no dropout), then
        sentence-transformers' mean pooling and normalisation."""
        spec = self._spec
        n = len(ids)
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][:n]
        x = x + w["embeddings.token_type_embeddings.weight"][0]  # one segment: type 0
        x = _norm(x, w, "embeddings.LayerNorm", spec.eps)
        width = spec.hidden // spec.heads
        scale = np.float32(1 / np.sqrt(width))
        for layer in range(spec.layers):
            p = f"encoder.layer.{layer}."
            q = _dense(x, w, p + "attention.self.query").reshape(n, spec.heads, width)
            k = _dense(x, w, p + "attention.self.key").reshape(n, spec.heads, width)
            v = _dense(x, w, p + "attention.self.value").reshape(n, spec.heads, width)
            scores = np.einsum("qhd,khd->hqk", q, k) * scale
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = np.einsum("hqk,khd->qhd", scores, v).reshape(n, spec.hidden)
            attended = _dense(context, w, p + "attention.output.dense") + x
            x = _norm(attended, w, p + "attention.output.LayerNorm", spec.eps)
            inner = _gelu(_dense(x, w, p + "intermediate.dense"))
            x = _norm(_dense(inner, w, p + "output.dense") + x, w, p + "output.LayerNorm", spec.eps)
        pooled = x.mean(axis=0)  # every token is real: no padding to mask out
        # sentence-transformers' Normalize: divide by the norm, kept off zero
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)


def _dense(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _norm(x: np.ndarray, w: dict[str, np.ndarray], name: str, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    scaled = centred / np.sqrt(variance + np.float32(eps))
    return scaled * w[name + ".weight"] + w[name + ".bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x·Φ(x), with erfc from Numerical Recipes' Chebyshev fit (relative
    error under 1.2e-7, float32's own rounding): numpy has no erf, and scipy's would cost more
    to import than the whole query."""
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = 1 / (1 + 0.5 * z)
    poly = np.float32(0.17087277)
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418):
        poly = c + t * poly
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * poly))
    erfc = t * np.exp(poly)  # erfc(|x| / √2)
    cdf = np.where(x >= 0, 1 - 0.5 * erfc, 0.5 * erfc)
    return (x * cdf).astype(np.float32)


def _one_blas_thread() -> Callable[[], AbstractContextManager[object]]:
    """A context that keeps numpy's BLAS on one thread while it lasts, when threadpoolctl (a
    dependency of sentence-transformers' scikit-learn) is there to set it.

    A query's matrices are a few rows: split over threads, each share is too small to pay for
    waking a thread, and when the cores are busy the other threads come late, so one thread
    answers sooner, and steadily."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext
    controller = ThreadpoolController()
    return lambda: controller.limit(limits=1, user_api="blas")


__all__ = ["IMPLEMENTED", "QueryEmbedder", "UnsupportedModel"]
