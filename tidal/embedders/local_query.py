"""The local model's forward pass in numpy, for embedding a query without torch.

A search embeds one short text. sentence-transformers would first import torch and
transformers and build the model, seconds before the query; this module reads the same weights
(``model.safetensors``) and the same tokenizer (``tokenizer.json``) and runs the same
computation in numpy: a BERT encoder, mean pooling over the tokens, L2 normalisation. Its
vectors are the ones ``LocalEmbedder`` stores, to float32 rounding, which is what lets a query
embedded here be compared with the chunks embedded there.

Only that architecture is implemented. ``QueryEmbedder`` reads the model's config files and the
weights' header first and raises ``UnsupportedModel`` for anything else (another encoder,
activation or pooling, a Dense layer, half-precision weights): ``open_query_embedder`` then
falls back to ``LocalEmbedder``, slower but right, rather than compute a different model.

The ingest keeps sentence-transformers: it encodes many texts at once on torch's threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tidal.embedders.catalog import DEFAULTS
from tidal.errors import ConfigError

IMPLEMENTED = "a BERT encoder (GELU, absolute positions) with mean pooling, float32 weights"
_MODULES = (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])


class UnsupportedModel(ConfigError):
    """The model is not one ``QueryEmbedder`` computes exactly as sentence-transformers does."""


@dataclass(frozen=True)
class _Spec:
    """The model's shape, from its config files."""

    hidden: int
    inner: int
    heads: int
    layers: int
    positions: int
    eps: float
    max_tokens: int


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
        self._spec = spec = _read_spec(path)
        self.dimension = spec.hidden
        self.max_input_tokens = spec.max_tokens
        names = _check_weights(path / "model.safetensors", spec)
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
                _read_weights(path / "model.safetensors", names),
                _tokenizer(path / "tokenizer.json", self.max_input_tokens),
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


def _read_spec(path: Path) -> _Spec:
    """The model's shape from its config files, or UnsupportedModel naming what differs from
    the one architecture implemented here."""

    def refuse(why: str) -> UnsupportedModel:
        return UnsupportedModel(f"{path}: {why}; the numpy query embedder computes {IMPLEMENTED}")

    try:
        modules = json.loads((path / "modules.json").read_text())
        config = json.loads((path / "config.json").read_text())
        sbert = json.loads((path / "sentence_bert_config.json").read_text())
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        pooling = json.loads((path / modules[1]["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise refuse(f"its sentence-transformers config cannot be read ({exc})") from None
    if kinds not in _MODULES or modules[0].get("path", "") != "":
        raise refuse(f"modules {kinds}, not Transformer, Pooling (and Normalize)")
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise refuse(f"pooling {modes or 'unset'}, not pooling_mode_mean_tokens alone")
    architectures = config.get("architectures") or ["BertModel"]
    if config.get("model_type") != "bert" or architectures != ["BertModel"]:
        raise refuse(f"model_type {config.get('model_type')!r} {architectures}, not BertModel")
    if config.get("hidden_act") != "gelu":
        raise refuse(f"hidden_act {config.get('hidden_act')!r}, not 'gelu'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise refuse(f"position_embedding_type {config['position_embedding_type']!r}")
    if sbert.get("do_lower_case"):
        raise refuse("sentence_bert_config.json sets do_lower_case")
    if not (path / "tokenizer.json").is_file() or not (path / "model.safetensors").is_file():
        raise refuse("no tokenizer.json or no model.safetensors")
    try:
        spec = _Spec(
            hidden=int(config["hidden_size"]),
            inner=int(config["intermediate_size"]),
            heads=int(config["num_attention_heads"]),
            layers=int(config["num_hidden_layers"]),
            positions=int(config["max_position_embeddings"]),
            eps=float(config.get("layer_norm_eps", 1e-12)),
            # what sentence-transformers truncates at, not the tokenizer's own limit
            max_tokens=int(sbert["max_seq_length"]),
        )
        width = int(pooling.get("word_embedding_dimension", spec.hidden))
    except (KeyError, TypeError, ValueError) as exc:
        raise refuse(f"a size is missing from config.json ({exc})") from None
    if width != spec.hidden or spec.hidden % spec.heads or spec.max_tokens > spec.positions:
        raise refuse("its sizes do not agree")
    return spec


def _check_weights(file: Path, spec: _Spec) -> dict[str, str]:
    """Each tensor the encoder needs, by its name here, mapped to its name in the file (which
    may add ``bert.``), from the file's header alone; UnsupportedModel when one is missing or of
    another dtype or shape than the config says."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int | None, ...]] = {
        "embeddings.word_embeddings.weight": (None, spec.hidden),
        "embeddings.position_embeddings.weight": (spec.positions, spec.hidden),
        "embeddings.token_type_embeddings.weight": (None, spec.hidden),
        "embeddings.LayerNorm.weight": (spec.hidden,),
        "embeddings.LayerNorm.bias": (spec.hidden,),
    }
    for layer in range(spec.layers):
        p = f"encoder.layer.{layer}."
        for part, out, into in (
            ("attention.self.query", spec.hidden, spec.hidden),
            ("attention.self.key", spec.hidden, spec.hidden),
            ("attention.self.value", spec.hidden, spec.hidden),
            ("attention.output.dense", spec.hidden, spec.hidden),
            ("intermediate.dense", spec.inner, spec.hidden),
            ("output.dense", spec.hidden, spec.inner),
        ):
            shapes[f"{p}{part}.weight"] = (out, into)
            shapes[f"{p}{part}.bias"] = (out,)
        for part in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}{part}.weight"] = (spec.hidden,)
            shapes[f"{p}{part}.bias"] = (spec.hidden,)
    try:
        with safe_open(str(file), framework="numpy") as f:
            stored = {k.removeprefix("bert."): k for k in f.keys()}  # noqa: SIM118 - not a dict
            found = {
                name: (f.get_slice(stored[name]).get_dtype(), f.get_slice(stored[name]).get_shape())
                for name in shapes
                if name in stored
            }
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own errors for a bad file
        raise UnsupportedModel(f"{file}: not a readable safetensors file ({exc})") from None
    for name, shape in shapes.items():
        dtype, got = found.get(name, (None, []))
        if (
            dtype != "F32"
            or len(got) != len(shape)
            or any(want not in (None, size) for want, size in zip(shape, got, strict=True))
        ):
            what = "missing" if dtype is None else f"{dtype} {list(got)}"
            raise UnsupportedModel(
                f"{file}: tensor {name} is {what}, not F32 {list(shape)}; "
                f"the numpy query embedder computes {IMPLEMENTED}"
            )
    return {name: stored[name] for name in shapes}


def _read_weights(file: Path, names: dict[str, str]) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    with safe_open(str(file), framework="numpy") as f:
        return {name: f.get_tensor(stored) for name, stored in names.items()}


def _tokenizer(file: Path, max_tokens: int) -> Any:
    """The model's tokenizer as sentence-transformers calls it: truncated at the model's
    ``max_seq_length`` (not the 128 stored in the file) and unpadded."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    return tokenizer


__all__ = ["IMPLEMENTED", "QueryEmbedder", "UnsupportedModel"]
