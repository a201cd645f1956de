"""The Markdown shapes every reader emits: headings, paragraphs and tables as rows."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_SPACES = re.compile(r"\s+")


def inline(text: str) -> str:
    """One line: runs of whitespace (newlines, tabs, no-break spaces) become one space."""
    return _SPACES.sub(" ", text).strip()


def heading(level: int, text: str) -> str:
    """``## Text``; levels past 6 stay at 6, the deepest the chunker cuts at."""
    return f"{'#' * min(max(level, 1), 6)} {inline(text)}"


def table(rows: Sequence[Sequence[str]]) -> str:
    """A pipe table, its first row the header: each row stays one readable line."""
    cells = [[inline(c).replace("|", "\\|") for c in row] for row in rows]
    cells = [row for row in cells if any(row)]
    if not cells:
        return ""
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)


def blocks(parts: Iterable[str]) -> str:
    """Blocks joined by one blank line, the empty ones dropped."""
    return "\n\n".join(p.strip("\n") for p in parts if p.strip())
