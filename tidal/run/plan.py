"""The dry run's forecast (``tidal plan``, ``--dry-run``): what the next run would ingest,
embed, delete and cost, computed from the same prepared work the run would drive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidal.errors import NothingToIndex, TidalError
from tidal.parsing import parse
from tidal.sync import Changes, Deletion

if TYPE_CHECKING:
    from tidal.pipeline import Pipeline


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


def forecast(
    pipeline: Pipeline,
    changes: Changes,
    *,
    deletion: Deletion,
    ignored: Sequence[tuple[str, str]] = (),
    price_per_million: float | None,
) -> Plan:
    """Read, parse and chunk what would be ingested, and ask the cache what is missing.

    Nothing is embedded or written. Files that would fail are listed with their reason; files
    found empty join ``ignored`` (entries the listing already set aside, with their reason).
    """
    chunks = to_embed = tokens = 0
    would_fail: list[tuple[str, str]] = []
    empty = list(ignored)
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
