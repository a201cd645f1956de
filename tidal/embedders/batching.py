"""Split, batch and fold: the pure steps of embedding a list of texts (``BaseEmbedder``).

A provider refuses, rather than trims, a request over one of its caps (inputs per request,
tokens summed over them, tokens in one input), so texts are cut to fit and batched to the caps
before anything is sent, and the pieces' vectors are folded back into one per text. Pure, so
every edge of the caps is tested without a server.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tiktoken

from tidal.chunking import encoding


def batch_by_tokens(
    counts: Sequence[int],
    *,
    max_inputs: int | None = None,
    max_tokens: int | None = None,
) -> list[range]:
    """Consecutive index ranges, each a request within both caps, covering every input in order.
    A cap that is None does not bind.

    Greedy: a batch closes when the next input would break a cap. Order is kept so the caller
    can concatenate the answers. An input that alone exceeds ``max_tokens`` can never be sent,
    so it is a ValueError here rather than a 400 from the server later.
    """
    if (max_inputs is not None and max_inputs < 1) or (max_tokens is not None and max_tokens < 1):
        raise ValueError(
            f"need max_inputs >= 1 and max_tokens >= 1, got {max_inputs}, {max_tokens}"
        )
    input_cap = math.inf if max_inputs is None else max_inputs
    token_cap = math.inf if max_tokens is None else max_tokens
    batches: list[range] = []
    start = total = 0
    for i, n in enumerate(counts):
        if n < 0:
            raise ValueError(f"input {i} has a negative token count ({n})")
        if n > token_cap:
            raise ValueError(
                f"input {i} has {n} tokens, more than a request may hold ({max_tokens})"
            )
        if i > start and (i - start >= input_cap or total + n > token_cap):
            batches.append(range(start, i))
            start, total = i, 0
        total += n
    if start < len(counts):
        batches.append(range(start, len(counts)))
    return batches


def fit_input(text: str, limit: int) -> list[str]:
    """``text`` whole if it fits ``limit`` cl100k tokens, else consecutive pieces that each do.

    Split, not truncated: truncating would silently leave the end of the text out of its vector,
    while pieces keep every word searchable (``fold`` averages the pieces' vectors back into
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


def fold(
    vectors: Sequence[Sequence[float]], owners: Sequence[int], counts: Sequence[int], n: int
) -> list[list[float]]:
    """One vector per original text, from the vectors of its pieces (``owners[j]``: the text
    piece ``j`` came from): a split text gets its pieces' token-weighted mean, re-normalised to
    unit length like the model's own vectors."""
    if len(vectors) == n:
        return list(vectors)  # type: ignore[arg-type]
    grouped: list[list[int]] = [[] for _ in range(n)]
    for j, owner in enumerate(owners):
        grouped[owner].append(j)
    folded = []
    for members in grouped:
        if len(members) == 1:
            folded.append(list(vectors[members[0]]))
            continue
        weights = np.array([counts[j] for j in members], dtype=np.float64)
        mean = np.average(np.array([vectors[j] for j in members]), axis=0, weights=weights)
        folded.append((mean / (np.linalg.norm(mean) or 1.0)).tolist())
    return folded
