"""``tidal search``: the chunks that best answer a question, of one type, team or folder.

Searching loads neither Prefect nor torch: the query's vector comes from the model's weights in
numpy (``tidal.embedders.local_query``), and the index answers through the store.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from tidal import store
from tidal.errors import ConfigError
from tidal.records import file_kind
from tidal.settings import Settings
from tidal.store import SearchHit

Mode = Literal["hybrid", "vector", "text"]
"""``tidal search --mode``: full text and vectors fused (the default), or either alone."""
MODES: tuple[Mode, ...] = get_args(Mode)


@dataclass(frozen=True)
class Filters:
    """What ``tidal search`` narrows to: a type and a team (both in each chunk's metadata) and
    a path prefix, checked against each other up front."""

    kind: str | None = None
    team: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.team and self.kind == "prd":
            raise ConfigError("--team picks designs (designs/<team>/...); PRDs have no team")
        if self.team and "/" in self.team.strip("/"):
            raise ConfigError(f"--team {self.team!r}: a team is one folder under designs/")
        team = self.team_prefix
        if team and self.path and not (self.path.startswith(team) or team.startswith(self.path)):
            raise ConfigError(f"--path {self.path!r} is outside team {self.team}'s {team}")

    @property
    def team_prefix(self) -> str | None:
        return f"designs/{self.team.strip('/')}/" if self.team else None

    @property
    def metadata(self) -> dict[str, str] | None:
        """The ``filter`` on chunk metadata."""
        picked = {"type": self.kind} if self.kind else {}
        if self.team:
            picked["team"] = self.team.strip("/")
        return picked or None

    @property
    def path_prefix(self) -> str | None:
        return self.path or None

    def describe(self) -> str:
        parts = [f"of type {self.kind!r}"] if self.kind else []
        if self.team:
            parts.append(f"of team {self.team.strip('/')!r}")
        if self.path_prefix:
            parts.append(f"under {self.path_prefix}")
        return " ".join(parts)


def search(
    settings: Settings,
    query: str,
    *,
    limit: int = 5,
    kind: str | None = None,
    team: str | None = None,
    path: str | None = None,
    mode: Mode = "hybrid",
) -> list[SearchHit]:
    """The ``limit`` best chunks for ``query``: by full text and vectors fused (``hybrid``),
    nearest vectors (``vector``) or full text alone (``text``), of one type, team or folder."""
    from tidal.embedders import open_query_embedder

    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: one of {', '.join(MODES)}")
    if not query.strip():  # its vector would rank every chunk, meaning nothing
        raise ConfigError('the question is empty: tidal search "what to look for"')
    if limit < 1:
        raise ConfigError(f"-k/--limit {limit}: ask for at least 1 chunk")
    filters = Filters(kind, team, path)
    embedder = open_query_embedder(settings)  # no torch: the query's vector in numpy
    index = store.open_store(settings, dimension=embedder.dimension, pool_size=1)
    try:
        vector = None if mode == "text" else embedder.embed([query])[0]  # text needs no model
        if vector is not None and mode == "vector":
            return index.search(
                vector, limit=limit, filter=filters.metadata, path_prefix=filters.path_prefix
            )
        return index.hybrid_search(
            query, vector, limit=limit, filter=filters.metadata, path_prefix=filters.path_prefix
        )
    finally:
        index.close()


def print_hits(hits: Sequence[SearchHit], settings: Settings, filters: Filters, mode: Mode) -> None:
    if not hits:
        print(why_no_hits(settings, filters, mode))
        return
    digits = 3 if mode == "vector" else 4  # fused scores are small: 2 / (50 + 1) at best
    for rank, hit in enumerate(hits, start=1):
        snippet = " ".join(hit.content.split())
        where = f"chunk {hit.chunk_index}, {file_kind(hit.source_path)}"
        print(f"{rank}. {hit.score:.{digits}f}  {hit.source_path}  ({where})")
        if section := hit.metadata.get("section"):
            print(f"     § {shorten(section, 100)}")
        print(textwrap.indent(shorten(snippet, 300), "     "))


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` at a word, or inside one that alone is longer (a hash, a URL,
    a run of characters with no space), so that something of it always shows."""
    short = textwrap.shorten(text, width=width, placeholder=" …")
    if len(text) > width and len(short) < width // 2:
        return text[: width - 2].rstrip() + " …"
    return short


def why_no_hits(settings: Settings, filters: Filters, mode: Mode) -> str:
    """What an empty answer means, from the index's own counts: an empty index, no chunk that
    the filters keep, or (full text alone) no chunk holding any word of the question."""
    status = store.index_status(settings)
    if status is None or status.chunks == 0:
        return "no results: the index is empty; `tidal ingest` fills it"
    held = f"the index holds {status.chunks} chunks from {status.files} files"
    where = f" {filters.describe()}" if filters.describe() else ""
    if mode == "text":
        return (
            f"no results: no chunk{where} holds any word of the question ({held});"
            " --mode hybrid ranks by meaning too"
        )
    if where:
        return f"no results: no chunk{where} ({held})"
    return f"no results ({held})"
