"""PDF, Word and HTML documents → Markdown-like text, so the chunker cuts them by section.

Each reader emits headings as ``#`` lines, paragraphs separated by blank lines and tables as
Markdown pipe rows: the same shape as a PRD written in Markdown, so the chunker, the embedding
cache and the search treat every PRD alike. A reader raises ``ParseError`` when the file is
broken or not what its extension says, and ``NothingToIndex`` when it opens but holds no text
Tidal can read (a scan, a Word file of images).

The readers' libraries are imported on first use: a run over JSON and Markdown never loads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidal.formats import Format


@dataclass(frozen=True)
class Extracted:
    """A document's text, with what its format told besides."""

    text: str
    title: str | None = None
    """The title the file declares (PDF or Word metadata, HTML ``<title>``), if any."""
    page_starts: tuple[int, ...] = ()
    """PDF only: the offset in ``text`` where each page begins, in page order."""


def extract(path: str, fmt: Format, data: bytes) -> Extracted:
    """Read one PDF, Word or HTML file; ``ParseError`` or ``NothingToIndex`` say why not."""
    if fmt == "pdf":
        from tidal.documents.pdf import read_pdf

        return read_pdf(path, data)
    if fmt == "docx":
        from tidal.documents.word import read_docx

        return read_docx(path, data)
    if fmt == "html":
        from tidal.documents.html import read_html

        return read_html(path, data)
    raise ValueError(f"{fmt!r} is not a document format")
