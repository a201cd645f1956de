"""What a run is about to do: which files are new, changed, unchanged or gone.

Pure decisions over listings and the store's file table, shared by the real run and the dry
run (``tidal plan``) so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidal.errors import NothingToIndex, TidalError
from tidal.parsing import parse
from tidal.records import SourceFile

if TYPE_CHECKING:
    from tidal.pipeline import Pipeline


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


@dataclass(frozen=True)
class Plan:
    """A dry run's forecast; every number is what the real run would do next."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    deletion: Deletion
    would_fail: tuple[tuple[str, str], ...]
    chunks: int
    chunks_to_embed: int
    tokens_to_embed: int
    embedder: str
    cost_usd: float | None
    ignored: tuple[tuple[str, str], ...] = ()
    """Listed entries that will not be ingested, with the reason."""

    def render(self) -> str:
        ignored = f", {len(self.ignored)} ignored" if self.ignored else ""
        lines = [
            f"Plan ({self.embedder}): {len(self.added)} new, {len(self.changed)} changed, "
            f"{len(self.unchanged)} unchanged, {len(self.deletion.allowed)} to delete{ignored}",
            f"  chunks {self.chunks}, of which {self.chunks_to_embed} to embed "
            f"({self.tokens_to_embed} tokens); the rest reuse stored vectors",
        ]
        if self.cost_usd is not None:
            lines.append(f"  estimated embedding cost: ${self.cost_usd:.4f}")
        lines += [f"  + {p}" for p in self.added]
        lines += [f"  ~ {p}" for p in self.changed]
        lines += [f"  - {p}" for p in self.deletion.allowed]
        lines += [f"  ! {p}: {reason}" for p, reason in self.would_fail]
        lines += [f"  ? {p}: {reason}" for p, reason in self.ignored]
        if self.deletion.refused:
            lines.append(f"  deletion refused: {self.deletion.refused}")
        return "\n".join(lines)


def make_plan(
    pipeline: Pipeline,
    changes: Changes,
    *,
    deletion: Deletion,
    price_per_million: float | None,
) -> Plan:
    """Read, parse and chunk what would be ingested, and ask the cache what is missing.

    Nothing is embedded or written. Files that would fail are listed with their reason.
    """
    chunks = to_embed = tokens = 0
    would_fail: list[tuple[str, str]] = []
    empty: list[tuple[str, str]] = []
    for file in [*changes.added, *changes.changed]:
        try:
            document = parse(file.path, pipeline.source.read(file))
        except NothingToIndex as exc:
            empty.append((file.path, exc.message))
            continue
        except TidalError as exc:
            would_fail.append((file.path, exc.message))
            continue
        file_chunks = pipeline.chunk(document)
        pending = pipeline.pending(file_chunks)
        chunks += len(file_chunks)
        to_embed += len(pending)
        tokens += sum(pipeline.embedder.count_tokens(pending))
    return Plan(
        added=tuple(f.path for f in changes.added),
        changed=tuple(f.path for f in changes.changed),
        unchanged=tuple(f.path for f in changes.unchanged),
        deletion=deletion,
        would_fail=tuple(would_fail),
        ignored=tuple(empty),
        chunks=chunks,
        chunks_to_embed=to_embed,
        tokens_to_embed=tokens,
        embedder=pipeline.embedder.name,
        cost_usd=None if price_per_million is None else tokens * price_per_million / 1e6,
    )
