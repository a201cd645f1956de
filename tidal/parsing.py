"""Bytes → text. Design JSON is rendered as a readable document (``tidal.designs``).

Decoding is strict: a file that is not clean UTF-8 is rejected, never guessed at, because a
mis-decoded document would be embedded as garbage and found by no search.
"""

from __future__ import annotations

import codecs
import json
import posixpath
from collections.abc import Iterator
from typing import Any

from tidal import designs
from tidal.documents import extract
from tidal.errors import NothingToIndex, ParseError
from tidal.formats import DOCUMENT_FORMATS, describe_supported, extension, file_kind, format_of
from tidal.records import Document

PARSER_VERSION = "2"


def parse(path: str, data: bytes) -> Document:
    """Turn one file's bytes into a Document, or raise ParseError saying why not."""
    fmt = format_of(path)
    if fmt is None:
        raise ParseError(
            f"unsupported file type {extension(path) or '(none)'!r}; "
            f"expected {describe_supported()}",
            path=path,
        )
    if fmt in DOCUMENT_FORMATS:  # PDF, Word, HTML: tidal.documents reads them
        if not data:
            raise NothingToIndex("empty file (0 bytes): nothing to index", path=path)
        got = extract(path, fmt, data)
        title = got.title or _title(path, got.text)
        return Document(path, file_kind(path), got.text, title, page_starts=got.page_starts)
    text = decode(path, data)
    if not text.strip():
        raise NothingToIndex("empty document (only whitespace): nothing to index", path=path)
    if fmt == "json":
        text = json_to_text(path, text)
    return Document(path=path, kind=file_kind(path), text=text, title=_title(path, text))


def decode(path: str, data: bytes) -> str:
    """Strict UTF-8 (a leading BOM is dropped), or UTF-16 announced by its BOM; binary or
    mis-encoded data is refused."""
    if not data:
        raise NothingToIndex("empty file (0 bytes): nothing to index", path=path)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # its BOM names it
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"file is not valid UTF-16 despite its byte-order mark: {exc.reason}", path=path
            ) from None
        return text.replace("\r\n", "\n").replace("\r", "\n")
    if b"\x00" in data:
        raise ParseError(
            "file is binary (contains NUL bytes), not text; UTF-16 text needs a byte-order mark",
            path=path,
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"file is not valid UTF-8 (byte {exc.start}: {data[exc.start : exc.start + 1]!r})",
            path=path,
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def json_to_text(path: str, text: str) -> str:
    """A design as headed sections and ``Key: value`` lines, every value kept."""
    try:
        value = json.loads(text, parse_int=_integer)
        leaves = list(_leaves(value, ""))
        rendered = designs.render(value)
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path=path
        ) from None
    except RecursionError:
        raise ParseError(
            "JSON nested too deeply to read (hundreds of levels of objects or arrays)", path=path
        ) from None
    if not leaves:
        raise NothingToIndex("empty JSON (no values): nothing to index", path=path)
    if not any(isinstance(leaf, str) and not isinstance(leaf, _Digits) for _, leaf in leaves):
        raise ParseError("JSON holds no text (no non-empty string values)", path=path)
    return rendered


class _Digits(str):
    """An integer longer than Python converts (``sys.get_int_max_str_digits``), kept as written:
    valid JSON, and its text is all the index needs of it."""


def _integer(digits: str) -> int | str:
    try:
        return int(digits)
    except ValueError:
        return _Digits(digits)


def _leaves(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for name, child in value.items():
            yield from _leaves(child, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _leaves(child, f"{key}[{i}]")
    elif value is None or (isinstance(value, str) and not value.strip()):
        return
    else:
        yield key, value


def _title(path: str, text: str) -> str:
    """A human title: the first markdown heading, a JSON ``title``, or the file name."""
    for line in text.splitlines()[:50]:
        stripped = line.strip()
        if stripped.startswith("# "):
            return stripped[2:].strip()
        if stripped.startswith("title: "):
            return stripped[len("title: ") :].strip()
    return posixpath.splitext(posixpath.basename(path))[0]
