"""Files held in a dict: a Source for tests and embedding Tidal in other programs.

Like httpx's ``MockTransport``, it ships with the library so the run's logic can be exercised
in milliseconds, with no folder, bucket or server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

from tidal.errors import Unreadable
from tidal.records import SourceFile


class MemorySource:
    """``files`` maps paths to bytes; edit it between runs to simulate changes."""

    def __init__(self, files: Mapping[str, bytes] | None = None, *, uri: str = "memory://") -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.uri = uri
        self.reads: list[str] = []
        """Every path read, in order: what a test asserts about downloads."""

    def list(self) -> Iterator[SourceFile]:
        for path in sorted(self.files):
            data = self.files[path]
            yield SourceFile(path, len(data), hashlib.sha256(data).hexdigest())

    def read(self, file: SourceFile) -> bytes:
        self.reads.append(file.path)
        try:
            return self.files[file.path]
        except KeyError:
            raise Unreadable("file vanished from the source", path=file.path) from None

    def version_of(self, file: SourceFile, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def covers(self, path: str) -> bool:
        return True

    def check(self) -> None:
        """Always there."""

    def close(self) -> None:
        """Nothing to release."""
