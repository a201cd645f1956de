"""A folder on disk: the default source, and the bundled sample corpus's home."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from tidal.errors import SourceError, TransientError
from tidal.records import SourceFile

log = logging.getLogger("tidal.sources")


class LocalSource:
    """Walks ``root`` and serves files under it; nothing outside ``root`` is ever read."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.uri = str(self.root)
        if not self.root.is_dir():
            raise SourceError(f"source folder {self.root} does not exist")

    def list(self) -> Iterator[SourceFile]:
        """Files sorted by relative path, hidden files skipped, with size and sha256."""
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):
                    continue
                full = Path(dirpath, name)
                if not self._inside(full):
                    log.warning("skipping %s: it links outside the source root", full)
                    continue
                found.append((full.relative_to(self.root).as_posix(), full))
        for rel, full in sorted(found):
            data = full.read_bytes()
            yield SourceFile(path=rel, size=len(data), content_hash=_sha256(data))

    def read(self, file: SourceFile) -> bytes:
        full = self.resolve(file.path)
        try:
            return full.read_bytes()
        except FileNotFoundError:
            raise SourceError("file vanished from the source folder", path=file.path) from None
        except IsADirectoryError:
            raise SourceError("path is a folder, not a file", path=file.path) from None
        except OSError as exc:
            raise TransientError(f"could not read file: {exc}", path=file.path) from exc

    def close(self) -> None:
        """Nothing to release: files are opened per read."""

    def covers(self, path: str) -> bool:
        return True

    def resolve(self, path: str) -> Path:
        """The on-disk path for ``path``; refuses ``..``, absolute paths and escaping links."""
        rel = PurePosixPath(path)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise SourceError("path escapes the source root", path=path)
        full = self.root.joinpath(*rel.parts)
        if not self._inside(full):
            raise SourceError("path escapes the source root (through a link)", path=path)
        return full

    def _inside(self, full: Path) -> bool:
        return full.resolve().is_relative_to(self.root)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
