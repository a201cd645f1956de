"""What a file's bytes really are, for the message when its extension lies."""

from __future__ import annotations

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office 97-2003 file (.doc, .xls)"),
    (b"\x1f\x8b", "gzip data"),
    (b"{\\rtf", "an RTF document"),
)


def what_it_is(data: bytes) -> str:
    """``a PNG image``, ``text``, ``binary data``...: a name for a message."""
    if not data:
        return "empty"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    head = data[:4096]
    if b"\x00" in head:
        return "binary data"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the 4 KB edge
            return "binary data"
    return "text"
