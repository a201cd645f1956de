"""Puts ``HashEmbedder`` in place of the local model in every process that starts with this
folder first on ``PYTHONPATH``: the flow and each Dask worker it spawns (they inherit the
environment). ``bench/runners.py --embedder hash`` uses it to measure orchestration alone.
"""

from __future__ import annotations

import tidal.embedders
from tidal.embedders.hashing import HashEmbedder


class _Unrecorded(HashEmbedder):
    def send(self, batch: list[str], tokens: int) -> list[list[float]]:
        vectors = super().send(batch, tokens)
        self.calls.clear()  # a long run would otherwise keep every text it embedded
        return vectors


def _open_embedder(settings: object) -> HashEmbedder:
    return _Unrecorded(dimension=384)


tidal.embedders.open_embedder = _open_embedder  # type: ignore[assignment]
