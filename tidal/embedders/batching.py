"""How many inputs go in one embedding request, and what to do with an input that is too long.

OpenAI refuses, rather than trims, a request over any of its caps: 2048 inputs, 300,000 tokens
summed over the inputs, 8191 tokens in any one input. Both functions here are pure so every edge
of those caps can be tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence

import tiktoken

from tidal.chunking import encoding

MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000
MAX_INPUT_TOKENS = 8191


def batch_by_tokens(
    counts: Sequence[int],
    *,
    max_inputs: int = MAX_INPUTS_PER_REQUEST,
    max_tokens: int = MAX_TOKENS_PER_REQUEST,
) -> list[range]:
    """Consecutive index ranges, each a request within both caps, covering every input in order.

    Greedy: a batch closes when the next input would break a cap. Order is kept so the caller
    can concatenate the answers. An input that alone exceeds ``max_tokens`` can never be sent,
    so it is a ValueError here rather than a 400 from the server later.
    """
    if max_inputs < 1 or max_tokens < 1:
        raise ValueError(
            f"need max_inputs >= 1 and max_tokens >= 1, got {max_inputs}, {max_tokens}"
        )
    batches: list[range] = []
    start = total = 0
    for i, n in enumerate(counts):
        if n < 0:
            raise ValueError(f"input {i} has a negative token count ({n})")
        if n > max_tokens:
            raise ValueError(
                f"input {i} has {n} tokens, more than a request may hold ({max_tokens})"
            )
        if i > start and (i - start >= max_inputs or total + n > max_tokens):
            batches.append(range(start, i))
            start, total = i, 0
        total += n
    if start < len(counts):
        batches.append(range(start, len(counts)))
    return batches


def fit_input(text: str, limit: int = MAX_INPUT_TOKENS) -> list[str]:
    """``text`` whole if it fits ``limit`` cl100k tokens, else consecutive pieces that each do.

    Split, not truncated: truncating would silently leave the end of the text out of its vector,
    while pieces keep every word searchable (the embedder averages the pieces' vectors back into
    one, as OpenAI's cookbook does for long inputs). Cuts fall on token boundaries, moved back if
    needed so no UTF-8 character is cut, and each piece is re-encoded to prove it fits: a
    substring can tokenize differently from the slice of tokens it came from.
    """
    if limit < 8:  # one character can take 4 tokens; a tiny limit could leave nowhere to cut
        raise ValueError(f"limit must be at least 8 tokens, got {limit}")
    enc = encoding()
    tokens = enc.encode_ordinary(text)
    if len(tokens) <= limit:
        return [text]
    data = text.encode("utf-8")
    offsets = _byte_offsets(enc, tokens)
    pieces: list[str] = []
    start, n = 0, len(tokens)
    while start < n:
        end = min(start + limit, n)
        while True:
            end = _char_boundary(start, end, n, offsets, data)
            piece = data[offsets[start] : offsets[end]].decode("utf-8")
            excess = len(enc.encode_ordinary(piece)) - limit
            if excess <= 0:
                break
            end = max(start + 1, end - excess)
        pieces.append(piece)
        start = end
    return pieces


def _byte_offsets(enc: tiktoken.Encoding, tokens: list[int]) -> list[int]:
    offsets = [0]
    for token in tokens:
        offsets.append(offsets[-1] + len(enc.decode_single_token_bytes(token)))
    return offsets


def _char_boundary(start: int, end: int, n: int, offsets: list[int], data: bytes) -> int:
    """The last token boundary at or before ``end`` that is also a character boundary."""
    cut = end
    while start < cut < n and _continues(data, offsets[cut]):
        cut -= 1
    if cut > start:
        return cut
    cut = end  # one character spans the whole window: end after it instead
    while cut < n and _continues(data, offsets[cut]):
        cut += 1
    return cut


def _continues(data: bytes, at: int) -> bool:
    return at < len(data) and data[at] & 0xC0 == 0x80
