"""The file types Tidal reads: the one place they are named.

Parsing, the kind a search shows (design or PRD), the ``TIDAL_EXTENSIONS`` default and its
validation, and the run's filter all read this table, so adding a format is one row here and
its parser in ``tidal.parsing`` (text and JSON) or ``tidal.documents`` (PDF, Word, HTML).
"""

from __future__ import annotations

import posixpath
from typing import Literal

FileKind = Literal["design", "prd", "other"]
Format = Literal["json", "text", "pdf", "docx", "html"]

FORMATS: dict[str, Format] = {
    ".json": "json",
    ".md": "text",
    ".markdown": "text",
    ".txt": "text",
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
}
"""Extension (lower case, with its dot) → how its bytes become text."""

SUPPORTED_EXTENSIONS = frozenset(FORMATS)

DOCUMENT_FORMATS: frozenset[Format] = frozenset({"pdf", "docx", "html"})
"""Formats read by ``tidal.documents`` into Markdown-like text; like text, they are PRDs."""


def extension(path: str) -> str:
    """``path``'s extension, lower case with its dot; "" when it has none."""
    return posixpath.splitext(path)[1].lower()


def format_of(path: str) -> Format | None:
    """How ``path`` is parsed, or None when Tidal does not read its type."""
    return FORMATS.get(extension(path))


def describe_supported() -> str:
    """The supported extensions for a message: ``.json, .markdown, .md, .txt``."""
    return ", ".join(sorted(SUPPORTED_EXTENSIONS))


def file_kind(path: str) -> FileKind:
    """Design or PRD, from the prefix and format: JSON outside ``prds/`` is a design, text (and
    a PDF, Word or HTML document) a PRD, as the bucket's layout has it."""
    fmt = format_of(path)
    if fmt == "json" and path.split("/", 1)[0] != "prds":
        return "design"
    if fmt == "text" or fmt in DOCUMENT_FORMATS:
        return "prd"
    return "other"
