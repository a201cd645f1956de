"""A folder on disk: the default source, and the bundled sample corpus's home.

The listing is strict where a mistake would lose data and lenient where one entry is odd. A
folder it cannot enter fails the whole listing, before anything is decided (its files would
otherwise look deleted). An entry that is not a document - a FIFO, a socket, a device, a
symlink loop or a link leaving the folder, a name that is not UTF-8 - is listed as *ignored*,
with the reason, and never opened; a FIFO would block the listing forever. A regular file that
cannot be read is listed like any other and fails alone when the run reads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from tidal.errors import SourceError, TransientError, Unreadable
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
        """Every entry sorted by relative path, hidden ones skipped, with size and sha256.

        Raises SourceError when a folder cannot be listed: a partial listing must never be
        mistaken for deletions.
        """
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(
            self.root, onerror=_listing_failed, followlinks=False
        ):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            kept = []
            for name in dirnames:  # links to folders: os.walk lists them but never enters them
                if os.path.islink(os.path.join(dirpath, name)):
                    filenames.append(name)
                else:
                    kept.append(name)
            dirnames[:] = kept
            for name in filenames:
                if not name.startswith("."):
                    full = Path(dirpath, name)
                    found.append((full.relative_to(self.root).as_posix(), full))
        for rel, full in sorted(found):
            yield self._entry(rel, full)

    def _entry(self, rel: str, full: Path) -> SourceFile:
        """The listing's record of one entry: a file with its sha256, or an ignored one."""
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return _ignored(shown, "the file name is not valid UTF-8; rename the file")
        try:
            target = full.resolve(strict=True)
        except RuntimeError:  # Python 3.11's Path.resolve on a link loop
            return _ignored(rel, "a symbolic link loop")
        except OSError as exc:
            return _ignored(rel, f"cannot be resolved ({exc.strerror or exc}): a broken link?")
        if not target.is_relative_to(self.root):
            return _ignored(rel, "a link to outside the source folder")
        try:
            info = target.stat()
        except OSError as exc:
            return _ignored(rel, f"cannot be examined ({exc.strerror or exc})")
        if not stat.S_ISREG(info.st_mode):
            if stat.S_ISDIR(info.st_mode):
                return _ignored(rel, "a link to a folder (links to folders are not followed)")
            return _ignored(rel, f"not a regular file ({_kind(info.st_mode)})")
        try:
            digest = _sha256(target)
        except OSError as exc:
            # Listed with a key from its metadata, so the run tries it and records why it fails.
            log.warning("cannot read %r while listing: %s", rel, exc.strerror or exc)
            return SourceFile(rel, info.st_size, f"unreadable:{info.st_size}:{info.st_mtime_ns}")
        return SourceFile(path=rel, size=info.st_size, content_hash=digest)

    def read(self, file: SourceFile) -> bytes:
        full = self.resolve(file.path)
        try:
            mode = full.stat().st_mode
            if stat.S_ISDIR(mode):
                raise SourceError("path is a folder, not a file", path=file.path)
            if not stat.S_ISREG(mode):  # never open a FIFO: it would block until written
                raise SourceError(f"not a regular file ({_kind(mode)})", path=file.path)
            return full.read_bytes()
        except FileNotFoundError:
            raise Unreadable("file vanished from the source folder", path=file.path) from None
        except PermissionError:
            raise Unreadable(
                "permission denied: the file cannot be read by the user Tidal runs as",
                path=file.path,
            ) from None
        except OSError as exc:
            raise TransientError(f"could not read file: {exc}", path=file.path) from exc

    def version_of(self, file: SourceFile, data: bytes) -> str:
        """The sha256 of the bytes read, as the listing keys files."""
        return hashlib.sha256(data).hexdigest()

    def check(self) -> None:
        """The folder was checked when the source was opened."""

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
        try:
            inside = full.resolve().is_relative_to(self.root)
        except RuntimeError:
            raise SourceError("path is a symbolic link loop", path=path) from None
        if not inside:
            raise SourceError("path escapes the source root (through a link)", path=path)
        return full


def _listing_failed(error: OSError) -> None:
    raise SourceError(
        f"cannot list {error.filename}: {error.strerror or error}; nothing was decided or "
        "deleted. Give the user Tidal runs as read and execute access to every folder under "
        "the source, or move the folder out of it"
    )


def _ignored(path: str, reason: str) -> SourceFile:
    return SourceFile(path=path, size=0, content_hash="", ignored=reason)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a file"


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
