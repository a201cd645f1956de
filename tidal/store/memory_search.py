"""How ``MemoryStore`` searches: Postgres' nearest-neighbour, full-text and fused rankings over
chunks held in memory.

The same answers as the SQL functions (``match_documents``, ``hybrid_search``) on a small index,
with the full-text ranking over plain lower-case words (stop words aside) rather than Postgres'
stemmed lexemes.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tidal.records import EmbeddedChunk
from tidal.store import SearchHit


@dataclass(frozen=True)
class StoredChunk:
    """One chunk as stored: its vector, who embedded it, the metadata a search hit carries."""

    embedded: EmbeddedChunk
    embedder: str
    metadata: dict[str, Any]

    def hit(self, score: float) -> SearchHit:
        chunk = self.embedded.chunk
        return SearchHit(
            self.metadata["source_path"], chunk.index, chunk.text, score, dict(self.metadata)
        )


def kept_by(
    stored: list[StoredChunk], filter: dict[str, Any] | None, path_prefix: str | None
) -> list[StoredChunk]:
    """The chunks of ``stored`` that ``filter`` (jsonb ``@>``) and ``path_prefix`` keep."""
    return [
        s
        for s in stored
        if (not filter or contains(s.metadata, filter))
        and (path_prefix is None or s.metadata["source_path"].startswith(path_prefix))
    ]


def nearest(
    embedding: Sequence[float], stored: list[StoredChunk]
) -> list[tuple[StoredChunk, float]]:
    """``stored`` by cosine similarity to ``embedding``, best first."""
    query = np.asarray(embedding, dtype=np.float64)
    scored = []
    for s in stored:
        vector = np.asarray(s.embedded.embedding, dtype=np.float64)
        scored.append((s, float(query @ vector / (np.linalg.norm(query) * np.linalg.norm(vector)))))
    return sorted(scored, key=lambda pair: -pair[1])


def fuse(
    rankings: list[tuple[float, list[StoredChunk]]], *, limit: int, rrf_k: int
) -> list[SearchHit]:
    """Reciprocal rank fusion of weighted rankings, each cut at ``2 * limit`` as the SQL cuts
    them; ties go to the better rank in the first ranking, then the second."""
    scores: dict[int, float] = defaultdict(float)
    ranks: defaultdict[int, list[float]] = defaultdict(lambda: [math.inf] * len(rankings))
    chunks: dict[int, StoredChunk] = {}
    for which, (weight, ranking) in enumerate(rankings):
        for rank, s in enumerate(ranking[: 2 * limit], start=1):
            scores[id(s)] += weight / (rrf_k + rank)
            ranks[id(s)][which] = rank
            chunks[id(s)] = s
    best = sorted(scores, key=lambda key: (-scores[key], *ranks[key]))[:limit]
    return [chunks[key].hit(scores[key]) for key in best]


_WORD = re.compile(r"\w+")
# fmt: off
_STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "has", "have",
    "how", "i", "in", "is", "it", "its", "of", "on", "or", "that", "the", "their", "there",
    "these", "this", "to", "was", "we", "what", "when", "where", "which", "who", "why", "will",
    "with", "you",
})
# fmt: on
"""The commonest of Postgres' English stop words, which a full-text query leaves out."""

MIN_SHARE = 0.6
"""``hybrid_search``'s ``full_text_min_share``: the share of the question's weight a chunk's
words must carry to rank by full text."""


def matching(
    query: str,
    similarity: dict[int, float],
    kept: list[StoredChunk],
    every: list[StoredChunk],
) -> list[StoredChunk]:
    """The chunks of ``kept`` whose words of ``query`` carry ``MIN_SHARE`` of its weight, each
    word weighing its BM25 inverse document frequency over ``every`` chunk; by that weight, a
    tie by ``similarity`` to the query's vector (by ``id`` of the chunk; none without one),
    then by how often they hold the words."""
    words = set(_WORD.findall(query.lower())) - _STOP_WORDS
    if not words:
        return []
    df = Counter(
        w for s in every for w in set(_WORD.findall(s.embedded.chunk.text.lower())) & words
    )
    n = len(every)
    idf = {w: math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5)) for w in df}
    enough = MIN_SHARE * sum(idf.values())
    scored = []
    for s in kept:
        counts = Counter(_WORD.findall(s.embedded.chunk.text.lower()))
        found = [w for w in words if counts[w]]
        rarity = sum(idf[w] for w in found)
        if found and rarity >= enough:
            near = -similarity.get(id(s), 0.0)
            scored.append((-rarity, near, -sum(counts[w] for w in found), s))
    scored.sort(key=lambda entry: entry[:3])
    return [entry[3] for entry in scored]


def contains(have: Any, want: Any) -> bool:
    """jsonb's ``@>``, which Postgres' ``match_documents`` filters metadata with."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            key in have and contains(have[key], value) for key, value in want.items()
        )
    if isinstance(want, list):
        return isinstance(have, list) and all(any(contains(h, w) for h in have) for w in want)
    return isinstance(have, bool) == isinstance(want, bool) and have == want
