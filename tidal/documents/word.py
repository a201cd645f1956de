"""Word (.docx) → text: heading styles become ``#`` lines, tables pipe rows, lists ``-`` items.

Read with python-docx (MIT). A .docx is a zip that python-docx loads whole, so the archive's
declared sizes are checked first (a zip bomb is refused before anything is inflated; zipfile
never inflates an entry past its declared size). Its XML parser resolves no entities, so an
entity bomb inflates nothing either.
"""

from __future__ import annotations

import io
import re
import zipfile

from tidal.documents import Extracted
from tidal.documents.markdown import blocks, heading, inline, table
from tidal.documents.sniff import what_it_is
from tidal.errors import NothingToIndex, ParseError

MAX_UNZIPPED_BYTES = 200_000_000
"""The most a .docx may inflate to: ~20 times the default size cap, as Word's XML compresses."""
MAX_ENTRIES = 10_000
_HEADING_STYLE = re.compile(r"heading (\d)", re.IGNORECASE)


def read_docx(path: str, data: bytes) -> Extracted:
    """The document body's paragraphs and tables in order, with its declared title."""
    _check_archive(path, data)
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
        # Style names by id, read once: python-docx resolves each paragraph's style by scanning
        # every style, which dominated reading a long document.
        styles = {style.style_id: style.name or "" for style in document.styles}
        parts = [_block(item, styles) for item in document.iter_inner_content()]
        title = inline(document.core_properties.title or "") or None
    except Exception as exc:  # python-docx and lxml on a broken part
        raise ParseError(f"corrupt Word document: {type(exc).__name__}: {exc}", path=path) from None
    text = blocks(parts)
    if not text.strip():
        raise NothingToIndex("Word document holds no text (only images, or empty)", path=path)
    return Extracted(text=text, title=title)


def _check_archive(path: str, data: bytes) -> None:
    if not data.startswith(b"PK\x03\x04"):
        raise ParseError(f"not a Word .docx document: the file is {what_it_is(data)}", path=path)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ParseError(f"corrupt Word document (broken zip: {exc})", path=path) from None
    if len(entries) > MAX_ENTRIES:
        raise ParseError(
            f"Word document holds {len(entries):,} parts; over {MAX_ENTRIES:,}", path=path
        )
    inflated = sum(entry.file_size for entry in entries)
    if inflated > MAX_UNZIPPED_BYTES:
        raise ParseError(
            f"Word document would inflate to {inflated / 1e6:,.0f} MB "
            f"(over {MAX_UNZIPPED_BYTES / 1e6:g} MB): a zip bomb or not a document",
            path=path,
        )
    if "word/document.xml" not in {entry.filename for entry in entries}:
        raise ParseError(
            "not a Word .docx document: a zip archive without word/document.xml", path=path
        )


def _block(item, styles: dict[str, str]) -> str:
    from docx.table import Table

    if isinstance(item, Table):
        return table(_rows(item))
    text = item.text.strip()
    if not text:
        return ""
    style = styles.get(item._p.style or "", "")  # no style of its own: Normal
    if style == "Title":
        return heading(1, text)
    match = _HEADING_STYLE.fullmatch(style)
    if match:
        return heading(int(match.group(1)), text)
    if style.startswith("List"):
        return f"- {inline(text)}"
    return text


def _rows(grid) -> list[list[str]]:
    """Each row's cells once: a merged cell spans several grid columns but is read once."""
    rows = []
    for row in grid.rows:
        cells: list[str] = []
        seen: list[object] = []
        for cell in row.cells:
            if any(cell._tc is tc for tc in seen):
                continue
            seen.append(cell._tc)
            cells.append(cell.text)
        rows.append(cells)
    return rows
