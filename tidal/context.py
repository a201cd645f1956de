"""What a chunk is embedded with: its document's title and the headings it sits under.

A chunk of a long PRD often reads as bare rules ("expires after 7 days unless renewed") and a
chunk of a design as bare values; the model cannot tell whose rules or which screen. The title
and section path above the text say it, as LlamaIndex embeds a node's metadata and Anthropic's
contextual retrieval prepends a chunk's place in its document. Only the embedded text carries
them: the stored ``content`` stays the document's own words.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import replace

from tidal.chunking import chunk_hash
from tidal.records import Chunk

_HEADING = re.compile(r"(?m)^(#{1,6}) +(.+?)\s*#*\s*$")
MAX_TITLE_CHARS = 150
MAX_HEADING_CHARS = 100
MAX_SECTION_CHARS = 300
"""A section path longer than this keeps its innermost headings: the context stays a line or
two, whatever the document's nesting."""
SEPARATOR = " > "


class Outline:
    """A document's headings, to ask which ones a position in its text sits under."""

    def __init__(self, text: str, title: str = "") -> None:
        self._starts: list[int] = []
        self._paths: list[tuple[str, ...]] = []
        stack: list[tuple[int, str]] = []
        for match in _HEADING.finditer(text):
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, _clip(match.group(2), MAX_HEADING_CHARS)))
            self._starts.append(match.start())
            self._paths.append(tuple(name for _, name in stack))
        self._title = title

    def section_at(self, offset: int) -> str:
        """The headings in force at ``offset`` (one starting there included), outermost first;
        a top heading that repeats the title is left out, the title says it already."""
        i = bisect.bisect_right(self._starts, offset) - 1
        path = list(self._paths[i]) if i >= 0 else []
        if path and path[0].casefold() == self._title.casefold():
            path = path[1:]
        return _join(path)


def in_context(chunks: list[Chunk], outline: Outline, title: str) -> list[Chunk]:
    """``chunks`` with their section and the context they are embedded with; each hash is
    then the embedded text's."""
    title = _clip(" ".join(title.split()), MAX_TITLE_CHARS)
    placed: list[Chunk] = []
    for chunk in chunks:
        section = outline.section_at(chunk.start)
        context = f"{title}\n{section}" if section else title
        chunk = replace(chunk, section=section, context=context)
        placed.append(replace(chunk, hash=chunk_hash(chunk.embed_text)))
    return placed


def _join(path: list[str]) -> str:
    """``A > B > C``, dropping outer headings until it fits ``MAX_SECTION_CHARS``."""
    while len(path) > 1 and len(SEPARATOR.join(path)) > MAX_SECTION_CHARS:
        path = path[1:]
    return _clip(SEPARATOR.join(path), MAX_SECTION_CHARS)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
