"""Where files come from. A new backend is one new module implementing ``Source``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from tidal.records import SourceFile


@runtime_checkable
class Source(Protocol):
    """Lists files with a cheap change key, and reads one file's bytes on demand."""

    uri: str

    def list(self) -> Iterator[SourceFile]:
        """Every file, sorted by path; a listing error raises, never yields a short corpus."""
        ...

    def read(self, file: SourceFile) -> bytes: ...


def open_source(uri: str) -> Source:
    """The Source for a ``TIDAL_SOURCE`` value."""
    from tidal.sources.local import LocalSource

    return LocalSource(uri)


__all__ = ["Source", "open_source"]
