"""A design's JSON rendered as the document a person would read.

The title becomes the top heading; each object under a key becomes a headed section (``## Audit
scope``), each object in a list a section named by its own name (``### Screen: Map view``).
Scalars become ``Key words: value`` lines; a list of short scalars one line (``States: default,
moving``), a list of sentences a bulleted list. Every value is kept, so full-text search still
finds an ID or a hex colour, but the sentences are no longer crowded out by
``screens[2].components[0].states[3]`` key paths, and the headings give the chunker its
sections and each chunk its section path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

TITLE_KEYS = ("title", "name")
"""A top-level string under one of these is the design's title."""
LABEL_KEYS = ("name", "title", "label", "token", "id", "key", "type")
"""An object in a list is headed by the first of these it holds as a string, else by its first
short string."""
MAX_LEVEL = 6
SHORT = 40
"""List items up to this many characters share one line; a longer one makes the list
bulleted (sentences joined by commas read as one run-on sentence)."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def render(value: Any) -> str:
    """The design as Markdown-like text; raises RecursionError for absurdly deep nesting."""
    return "\n".join(_document(value)).strip() + "\n"


def _document(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        title_key = next(
            (k for k in TITLE_KEYS if isinstance(value.get(k), str) and value[k].strip()), None
        )
        if title_key is not None:
            yield f"# {_line(value[title_key])}"
            yield ""
            value = {k: v for k, v in value.items() if k != title_key}
        yield from _object(value, 1)
    elif isinstance(value, list):
        yield from _list("item", value, 0)
    elif _present(value):
        yield _scalar(value)


def _object(value: dict[str, Any], level: int) -> Iterator[str]:
    """Scalars first, as lines under the object's own heading; then its nested sections, so no
    line lands under a heading it does not belong to."""
    lines = [_entry(k, v) for k, v in value.items() if _is_line(v) and _present(v)]
    if lines:
        yield from lines
        yield ""
    for key, child in value.items():
        if isinstance(child, dict) and child:
            yield f"{_hashes(level + 1)} {words(key)}"
            yield ""
            yield from _object(child, level + 1)
        elif isinstance(child, list) and not _is_line(child):
            yield from _list(key, child, level)


def _list(key: str, items: list[Any], level: int) -> Iterator[str]:
    """A list that holds objects (or lists): each object a section of its own."""
    scalars = [item for item in items if not isinstance(item, dict | list) and _present(item)]
    if scalars:
        yield _entry(key, scalars)
        yield ""
    name = singular(words(key))
    for n, item in enumerate(items, start=1):
        if isinstance(item, dict) and item:
            label_key = _label_key(item)
            label = _line(item[label_key]) if label_key else str(n)
            yield f"{_hashes(level + 1)} {name}: {label}"
            yield ""
            yield from _object({k: v for k, v in item.items() if k != label_key}, level + 1)
        elif isinstance(item, list) and item:
            yield from _list(f"{key} {n}", item, level)


def _label_key(item: dict[str, Any]) -> str | None:
    named = [k for k in LABEL_KEYS if isinstance(item.get(k), str) and item[k].strip()]
    if named:
        return named[0]
    short = [k for k, v in item.items() if isinstance(v, str) and 0 < len(v.strip()) <= SHORT]
    return short[0] if short else None


def words(key: str) -> str:
    """A key as words: ``audit_scope``, ``auditScope`` and ``audit-scope`` → ``Audit scope``;
    an all-capitals word (``WCAG``) keeps its capitals."""
    parts = _CAMEL.sub(" ", str(key)).replace("_", " ").replace("-", " ").split()
    if not parts:
        return str(key)
    spoken = " ".join(p if p.isupper() and len(p) > 1 else p.lower() for p in parts)
    return spoken[0].upper() + spoken[1:]


def singular(noun: str) -> str:
    """``Screens`` → ``Screen``, ``Entries`` → ``Entry``; good enough for section names."""
    lower = noun.lower()
    if lower.endswith("ies") and len(noun) > 4:
        return noun[:-3] + "y"
    if lower.endswith(("sses", "xes", "ches", "shes")):
        return noun[:-2]
    if lower.endswith("s") and not lower.endswith(("ss", "us", "is")):
        return noun[:-1]
    return noun


def _is_line(value: Any) -> bool:
    """A scalar, or a list of scalars only: one line of text."""
    if isinstance(value, list):
        return all(not isinstance(v, dict | list) for v in value)
    return not isinstance(value, dict)


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list):
        return any(_present(v) for v in value)
    return True


def _entry(key: str, value: Any) -> str:
    """``Key: value``; a list of scalars on the line, or bulleted below it when long."""
    # A key that starts with "#" would read as a heading and cut a section where the JSON has
    # none: escaped, as Markdown escapes it.
    name = words(key)
    name = "\\" + name if name.startswith("#") else name
    if not isinstance(value, list):
        return f"{name}: {_scalar(value)}"
    items = [_scalar(v) for v in value if _present(v)]
    if all(len(item) <= SHORT for item in items):
        return f"{name}: {', '.join(items)}"
    return f"{name}:\n" + "\n".join(f"- {item}" for item in items)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _line(value) if isinstance(value, str) else str(value)


def _line(text: str) -> str:
    return " ".join(text.split())


def _hashes(level: int) -> str:
    return "#" * min(level, MAX_LEVEL)
