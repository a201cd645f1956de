"""HTML (.html, .htm) → text: ``h1``-``h6`` become ``#`` lines, tables pipe rows, list items
``-`` lines; scripts, styles and the head are dropped.

Read with the standard library's ``html.parser``: it never fetches, resolves or runs anything,
it reads broken markup as browsers do (without failing), and its time is linear in the input,
which the run's size cap bounds.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from html.parser import HTMLParser

from tidal.documents import Extracted
from tidal.documents.markdown import blocks, heading, inline, table
from tidal.documents.sniff import what_it_is
from tidal.errors import NothingToIndex, ParseError

_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HIDDEN = frozenset({"script", "style", "noscript", "template", "head", "svg", "math"})
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "ul",
        "ol", "dl", "dt", "dd", "blockquote", "pre", "figure", "figcaption", "form",
        "fieldset", "details", "summary", "hr", "address", "body",
    }
)  # fmt: skip
_HEADINGS = {f"h{n}": n for n in range(1, 7)}


def read_html(path: str, data: bytes) -> Extracted:
    """The page's visible text as Markdown-like blocks, with its ``<title>``."""
    reader = _Reader()
    reader.feed(decode_html(path, data))
    reader.close()
    text = blocks(reader.finish())
    if not text.strip():
        raise NothingToIndex("HTML holds no text (nothing outside scripts and styles)", path=path)
    return Extracted(text=text, title=inline(reader.title) or None)


def decode_html(path: str, data: bytes) -> str:
    """By the byte-order mark, else the ``<meta charset>`` it declares, else strict UTF-8."""
    if not data.strip():
        raise NothingToIndex("empty file: nothing to index", path=path)
    found = what_it_is(data)
    if found not in ("text", "binary data"):  # a PDF, an image, a zip... named .html
        raise ParseError(f"not an HTML document: the file is {found}", path=path)
    encoding = "utf-8"
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if data.startswith(bom):
            encoding = name
            break
    else:
        declared = _CHARSET.search(data[:4096])
        if declared:
            # an unknown name leaves UTF-8, and a clear error if that fails
            with contextlib.suppress(LookupError):
                encoding = codecs.lookup(declared.group(1).decode("ascii")).name
    if encoding.startswith("utf-8") and b"\x00" in data[:4096]:
        raise ParseError(f"not an HTML document: the file is {found}", path=path)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"HTML is not valid {encoding} (byte {exc.start}); declare its <meta charset>",
            path=path,
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _Reader(HTMLParser):
    """Collects blocks of text; a table's cells are gathered into rows until it closes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.title = ""
        self._text: list[str] = []
        self._hidden = 0
        self._in_title = False
        self._pre = 0
        self._heading = 0
        self._tables: list[list[list[str]]] = []  # nested tables: innermost last
        self._cell: list[str] | None = None

    # -- tags --------------------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _HEADINGS:
            self._flush()
            self._heading = _HEADINGS[tag]
        elif tag == "table":
            self._flush()
            self._tables.append([])
        elif tag == "tr" and self._tables:
            self._tables[-1].append([])
        elif tag in ("td", "th") and self._tables:
            self._end_cell()
            self._cell = []
        elif tag == "li":
            self._flush()
            self._text.append("- ")
        elif tag == "br":
            self._text.append("\n")
        elif tag in _BLOCKS:
            self._pre += tag == "pre"
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _HEADINGS and self._heading:
            words = inline("".join(self._text))
            self._text = []
            if words:
                self.out.append(heading(self._heading, words))
            self._heading = 0
        elif tag in ("td", "th"):
            self._end_cell()
        elif tag == "table" and self._tables:
            self._end_cell()
            rows = self._tables.pop()
            rendered = table(rows)
            if self._tables and self._cell is not None:  # a table in a cell: its rows inline
                self._cell.append(" ".join(" ".join(row) for row in rows))
            elif rendered:
                self.out.append(rendered)
        elif tag in _BLOCKS or tag == "li":
            self._flush()
            self._pre -= tag == "pre" and self._pre > 0

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._hidden:
            return
        if not self._pre:  # a newline in markup is a space; <br> is the line break
            data = data.replace("\n", " ")
        if self._cell is not None:
            self._cell.append(data)
        else:
            self._text.append(data)

    # -- blocks ------------------------------------------------------------------------------

    def _end_cell(self) -> None:
        if self._cell is None or not self._tables:
            return
        if not self._tables[-1]:
            self._tables[-1].append([])
        self._tables[-1][-1].append(inline("".join(self._cell)))
        self._cell = None

    def _flush(self) -> None:
        """The text gathered so far becomes a block: one paragraph, its lines kept in <pre>."""
        raw = "".join(self._text)
        self._text = []
        if self._heading:
            self._text = [raw]  # a block tag inside a heading: keep gathering the heading
            return
        if self._pre:
            block = raw.strip("\n")
        else:
            block = "\n".join(inline(line) for line in raw.split("\n") if line.strip())
        if block.strip():
            self.out.append(block)

    def finish(self) -> list[str]:
        self._end_cell()
        while self._tables:
            self.out.append(table(self._tables.pop()))
        self._flush()
        return self.out
