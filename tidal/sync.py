"""What changed between the source and the index: which files are new, changed, unchanged or
gone, and whether the gone may be deleted.

Pure decisions over listings and the store's file table, shared by the run, the dry run
(``tidal plan``) and the pipeline under a file's claim, so none can disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from tidal.records import SourceFile


@dataclass(frozen=True)
class Deletion:
    """Paths gone from the source; ``refused`` says why they are kept anyway."""

    paths: tuple[str, ...] = ()
    refused: str | None = None

    @property
    def allowed(self) -> tuple[str, ...]:
        return () if self.refused else self.paths


def plan_deletions(
    listed: Iterable[str],
    stored: Iterable[str],
    *,
    covers: Callable[[str], bool],
    max_share: float,
    force: bool = False,
) -> Deletion:
    """Stored files the source no longer lists, under the guards.

    Only paths the source covers count (a run over ``designs/`` never deletes ``prds/``). An
    empty listing deletes nothing, forced or not: an emptied bucket and a mistyped prefix look
    the same. Deleting more than ``max_share`` of the covered index needs ``force``.
    """
    present = set(listed)
    covered = {p for p in stored if covers(p)}
    gone = tuple(sorted(covered - present))
    if not gone:
        return Deletion()
    if not present:
        return Deletion(gone, "the source listed no files; an empty listing never deletes")
    share = len(gone) / len(covered)
    if share > max_share and not force:
        return Deletion(
            gone,
            f"{len(gone)} of {len(covered)} indexed files ({share:.0%}) are gone from the source, "
            f"over TIDAL_MAX_DELETE_SHARE={max_share:.0%}; if that is intended, run again with "
            "force_delete (TIDAL_FORCE_DELETE=true, or --force-delete)",
        )
    return Deletion(gone)


@dataclass(frozen=True)
class Changes:
    """The listed files sorted by what a run must do with them."""

    added: list[SourceFile]
    changed: list[SourceFile]
    unchanged: list[SourceFile]

    @property
    def total(self) -> int:
        return len(self.added) + len(self.changed) + len(self.unchanged)


def is_unchanged(file: SourceFile, current: Mapping[str, str]) -> bool:
    """The one test of "nothing to do": the index holds exactly these bytes, ingested by this
    very pipeline (``current`` comes from ``Store.current_files`` for the run's fingerprint).

    The run asks it of the whole listing before mapping anything; the pipeline asks it again
    under the file's claim, where a concurrent run may just have done the work.
    """
    return current.get(file.path) == file.content_hash


def split_by_state(
    files: Sequence[SourceFile], current: dict[str, str], stored: set[str]
) -> Changes:
    """Added, changed and unchanged files.

    ``current`` maps the paths ingested under this run's fingerprint to their change keys;
    ``stored`` is every path the index knows. A file is changed when its bytes or the pipeline
    changed since it was stored, or when it failed last time.
    """
    unchanged = [f for f in files if is_unchanged(f, current)]
    added = [f for f in files if f.path not in stored]
    changed = [f for f in files if f.path in stored and not is_unchanged(f, current)]
    return Changes(added, changed, unchanged)
