"""PDF → text by page, with headings from the outline or, lacking one, from font sizes.

Read with pypdf (pure Python, BSD). What bounds a hostile file:

* its size: the run's size cap applies before download (``TIDAL_MAX_FILE_MB``);
* memory: pypdf caps every decompressed stream (75 MB by default), so a small file cannot
  inflate into gigabytes, and the text kept is capped at ``MAX_TEXT_CHARS``;
* time: ``SECONDS`` per file, checked between pages, so a pathological file fails after at
  most that plus one page (whose work the stream cap bounds) and never holds a worker. A
  thread cannot be interrupted mid-page; a subprocess could be, but would cost every PDF an
  interpreter start and take the parse out of the run's memory accounting.
"""

from __future__ import annotations

import io
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tidal.documents import Extracted
from tidal.documents.markdown import blocks, heading, inline
from tidal.documents.sniff import what_it_is
from tidal.errors import NothingToIndex, ParseError

SECONDS = 60.0
"""The most one PDF may take to read: well past what a text PDF under the default size cap
takes, short enough that a pathological one costs a worker a minute, not the run."""
MAX_TEXT_CHARS = 50_000_000
"""More text than any document the size cap admits holds, unless its streams inflate."""
_MAX_OUTLINE = 10_000
_PARAGRAPH_GAP = 1.3  # a line gap this many times the page's usual one starts a paragraph
_HEADING_SIZE = 1.15  # a line this many times the body's font size is a heading (no outline)


@dataclass
class _Line:
    text: str
    y: float | None = None
    size: float = 0.0
    level: int = 0
    """Heading level (1-6), 0 for body text."""


def read_pdf(
    path: str,
    data: bytes,
    *,
    seconds: float = SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Extracted:
    """The PDF's text, page after page, ``#`` lines where sections start."""
    if b"%PDF-" not in data[:1024]:
        raise ParseError(f"not a PDF: the file is {what_it_is(data)}", path=path)
    from pypdf import PdfReader

    started = clock()
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(
                "PDF is encrypted with a password: remove the password to index it", path=path
            )
        count = len(reader.pages)
        outline = _outline(reader)
    except ParseError:
        raise
    except Exception as exc:  # pypdf's own errors, and what a corrupt file makes it raise
        raise ParseError(f"corrupt PDF: {type(exc).__name__}: {exc}", path=path) from None
    pages: list[list[_Line]] = []
    total = 0
    for number in range(count):
        if clock() - started > seconds:
            raise ParseError(
                f"PDF took over {seconds:g} s to read; stopped at page {number + 1} of {count}",
                path=path,
            )
        try:
            lines = _page_lines(reader.pages[number])
        except Exception as exc:
            raise ParseError(
                f"corrupt PDF: page {number + 1}: {type(exc).__name__}: {exc}", path=path
            ) from None
        total += sum(len(line.text) for line in lines)
        if total > MAX_TEXT_CHARS:
            raise ParseError(
                f"PDF holds over {MAX_TEXT_CHARS:,} characters of text; read up to page "
                f"{number + 1} of {count}",
                path=path,
            )
        pages.append(lines)
    if total == 0:
        raise NothingToIndex(
            "PDF has no text layer (a scan or images only); OCR is not supported", path=path
        )
    if outline:
        _mark_outline(pages, outline)
    else:
        _mark_by_size(pages)
    text, starts = _join(pages)
    return Extracted(text=text, title=_metadata_title(reader), page_starts=starts)


def _page_lines(page) -> list[_Line]:
    """The page's lines as pypdf extracts them, each with its baseline and font size."""
    fragments: list[tuple[str, float, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], _font: object, size: float) -> None:
        scale = math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3])
        fragments.append((text, tm[4] * cm[1] + tm[5] * cm[3] + cm[5], size * scale))

    page.extract_text(visitor_text=visit)
    lines = [_Line("")]
    for text, y, size in fragments:
        for i, piece in enumerate(text.split("\n")):
            if i:
                lines.append(_Line(""))
            line = lines[-1]
            if piece.strip() and line.y is None:
                line.y = y
            if piece.strip():
                line.size = max(line.size, size)
            line.text += piece
    for line in lines:
        line.text = line.text.rstrip()
    return [line for line in lines if line.text.strip()]


def _outline(reader) -> dict[int, list[tuple[int, str]]]:
    """Page index → the (level, title) of each outline entry that starts a section there."""
    found: dict[int, list[tuple[int, str]]] = {}
    stack: list[tuple[list, int]] = [(list(reader.outline), 1)]
    seen = 0
    while stack and seen < _MAX_OUTLINE:
        items, level = stack.pop()
        for i, item in enumerate(items):
            if isinstance(item, list):
                continue
            seen += 1
            children = items[i + 1] if i + 1 < len(items) else None
            page = reader.get_destination_page_number(item)
            title = inline(str(item.title or ""))
            if page is not None and page >= 0 and title:
                found.setdefault(page, []).append((level, title))
            if isinstance(children, list):
                stack.append((children, level + 1))
    for entries in found.values():
        entries.sort(key=lambda entry: entry[0])
    return found


def _mark_outline(pages: list[list[_Line]], outline: dict[int, list[tuple[int, str]]]) -> None:
    """Each outline title becomes a heading where its page shows it, or heads the page."""
    for number, entries in outline.items():
        if number >= len(pages):
            continue
        lines = pages[number]
        at_top: list[_Line] = []
        for level, title in entries:
            match = next((ln for ln in lines if not ln.level and inline(ln.text) == title), None)
            if match is not None:
                match.level = level
            else:
                at_top.append(_Line(title, level=level))
        lines[:0] = at_top


def _mark_by_size(pages: list[list[_Line]]) -> None:
    """Without an outline, short lines set larger than the body text are headings, the
    largest size level 1."""
    sizes: Counter[float] = Counter()
    for lines in pages:
        for line in lines:
            sizes[round(line.size, 1)] += len(line.text)
    if not sizes:
        return
    body = sizes.most_common(1)[0][0]
    larger = sorted({s for s in sizes if s >= body * _HEADING_SIZE}, reverse=True)
    levels = {size: min(i + 1, 6) for i, size in enumerate(larger)}
    for lines in pages:
        for line in lines:
            level = levels.get(round(line.size, 1))
            if level and len(line.text) <= 150 and re.search(r"\w", line.text):
                line.level = level


def _join(pages: list[list[_Line]]) -> tuple[str, tuple[int, ...]]:
    """The document's text and where each page starts in it."""
    text = ""
    starts: list[int] = []
    for lines in pages:
        page = blocks(_blocks(lines))
        if text and page:
            text += "\n\n"
        starts.append(len(text))
        text += page
    return text, tuple(starts)


def _blocks(lines: list[_Line]) -> list[str]:
    """Headings alone; body lines grouped into paragraphs where the line spacing widens."""
    gaps = sorted(
        a.y - b.y
        for a, b in zip(lines, lines[1:], strict=False)
        if a.y is not None and b.y is not None and a.y > b.y
    )
    usual = gaps[len(gaps) // 4] if gaps else 0.0  # within a paragraph lines sit closest
    out: list[str] = []
    paragraph: list[str] = []
    previous: _Line | None = None
    for line in lines:
        if line.level:
            out.append("\n".join(paragraph))
            paragraph = []
            out.append(heading(line.level, line.text))
        else:
            if paragraph and previous is not None and _breaks(previous, line, usual):
                out.append("\n".join(paragraph))
                paragraph = []
            paragraph.append(line.text)
        previous = line
    out.append("\n".join(paragraph))
    return out


def _breaks(previous: _Line, line: _Line, usual: float) -> bool:
    if previous.y is None or line.y is None or usual <= 0:
        return False
    gap = previous.y - line.y
    return gap <= 0 or gap > usual * _PARAGRAPH_GAP


def _metadata_title(reader) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # a malformed info dictionary costs only the title
        return None
    return (inline(str(title)) or None) if title else None
