"""The files of a sentence-transformers model that ``QueryEmbedder`` computes in numpy: read,
and checked against the one architecture it implements before anything is computed.

``read_spec`` reads the shape from the config files and ``check_weights`` each tensor's dtype and
shape from the safetensors header alone, so an unsupported model is refused
(``UnsupportedModel``) in milliseconds, and a search falls back to sentence-transformers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tidal.errors import ConfigError

IMPLEMENTED = "a BERT encoder (GELU, absolute positions) with mean pooling, float32 weights"
_MODULES = (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])


class UnsupportedModel(ConfigError):
    """The model is not one ``QueryEmbedder`` computes exactly as sentence-transformers does."""


@dataclass(frozen=True)
class ModelSpec:
    """The model's shape, from its config files."""

    hidden: int
    inner: int
    heads: int
    layers: int
    positions: int
    eps: float
    max_tokens: int


def read_spec(path: Path) -> ModelSpec:
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
        spec = ModelSpec(
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


def check_weights(file: Path, spec: ModelSpec) -> dict[str, str]:
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


def read_weights(file: Path, names: dict[str, str]) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    with safe_open(str(file), framework="numpy") as f:
        return {name: f.get_tensor(stored) for name, stored in names.items()}


def tokenizer(file: Path, max_tokens: int) -> Any:
    """The model's tokenizer as sentence-transformers calls it: truncated at the model's
    ``max_seq_length`` (not the 128 stored in the file) and unpadded."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    return tokenizer


__all__ = [
    "IMPLEMENTED",
    "ModelSpec",
    "UnsupportedModel",
    "check_weights",
    "read_spec",
    "read_weights",
    "tokenizer",
]
