"""Which pages of a PDF a stretch of its text lies on."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def page_span(page_starts: Sequence[int], start: int, length: int) -> list[int] | None:
    """``[first, last]`` page numbers (from 1) of the text at ``start`` for ``length``
    characters, given where each page starts; None for a document without pages."""
    if not page_starts:
        return None
    last_char = start + max(length, 1) - 1
    first = max(bisect.bisect_right(page_starts, start), 1)
    last = max(bisect.bisect_right(page_starts, last_char), first)
    return [first, last]
