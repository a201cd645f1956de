"""Where files come from. A new backend is one new module implementing ``Source``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tidal.records import SourceFile

if TYPE_CHECKING:
    from tidal.settings import Settings


@runtime_checkable
class Source(Protocol):
    """Lists files with a cheap change key, and reads one file's bytes on demand."""

    uri: str

    def list(self) -> Iterator[SourceFile]:
        """Every file, sorted by path; a listing error raises, never yields a short corpus."""
        ...

    def read(self, file: SourceFile) -> bytes:
        """The file's bytes now; ``Unreadable`` if it is gone or may not be read."""
        ...

    def version_of(self, file: SourceFile, data: bytes) -> str:
        """The change key of ``data``, which this thread's ``read(file)`` just returned.

        The file may have changed since it was listed; the index records the version it holds,
        never the listing's, so it can never claim a version whose text it does not have.
        """
        ...

    def covers(self, path: str) -> bool:
        """Whether ``path`` lies where this source lists; only such paths may be deletion-synced."""
        ...

    def check(self) -> None:
        """Fail fast, with the variable to fix, on a wrong location or credentials."""
        ...

    def close(self) -> None:
        """Release connections; the source is not used afterwards."""
        ...


def open_source(settings: Settings) -> Source:
    """The Source that ``TIDAL_SOURCE`` names: a Supabase bucket, or a local folder."""
    location = settings.supabase_location
    if location is not None:
        from tidal.sources.supabase import SupabaseSource

        assert settings.supabase_url and settings.supabase_service_role_key  # checked by Settings
        return SupabaseSource(
            settings.supabase_url,
            settings.supabase_service_role_key.get_secret_value(),
            location.bucket,
            location.prefixes,
            timeout=settings.source_timeout,
            outage_seconds=settings.outage_seconds,
        )
    from tidal.sources.local import LocalSource

    return LocalSource(settings.source)


__all__ = ["Source", "open_source"]
