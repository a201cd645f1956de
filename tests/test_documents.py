"""PDF, Word and HTML PRDs (``tidal.documents``): real files made by fpdf2 and python-docx and
HTML written by hand, read into sections; hostile ones each failed or ignored alone with a
reason; an edited PDF re-embeds only its changed chunks; the same files through the local
folder and through the Storage fake with the real ``supabase`` client."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import documents as make
from tests.fakes.storage_server import SERVICE_KEY, FakeStorage
from tests.flowkit import counts
from tidal.chunking import ChunkingOptions, count_tokens
from tidal.documents.pdf import read_pdf
from tidal.embedders.hashing import HashEmbedder
from tidal.errors import NothingToIndex, ParseError
from tidal.formats import file_kind
from tidal.parsing import parse
from tidal.pipeline import Pipeline
from tidal.run import IngestRun, run_in_threads
from tidal.sources import Source
from tidal.sources.local import LocalSource
from tidal.sources.memory import MemorySource
from tidal.sources.supabase import SupabaseSource
from tidal.store.memory import MemoryStore

SECTIONS_AS_MARKDOWN = [
    "# Checkout",
    "A traveller pays for a booking in one step, with a saved card or a wallet.",
    "## Payment methods",
    "Cards and wallets are accepted in every market we sell in.",
]
PIPE_TABLE = (
    "| Method | Owner | Launch |\n| --- | --- | --- |\n"
    "| Card | Aurora | Q1 |\n| Wallet | Borealis | Q3 |"
)


def _blocks(text: str) -> list[str]:
    return text.split("\n\n")


# --- reading each format ---------------------------------------------------------------------


def test_a_pdf_keeps_its_outline_as_headings_its_paragraphs_and_where_each_page_starts() -> None:
    doc = parse("prds/checkout.pdf", make.pdf(make.SPEC, title="Checkout PRD"))

    assert doc.kind == "prd" and doc.title == "Checkout PRD"  # the metadata title
    assert _blocks(doc.text)[:4] == SECTIONS_AS_MARKDOWN
    # A PDF's text layer has no table structure: each row stays one line, in order.
    assert "Method Owner Launch\nCard Aurora Q1\nWallet Borealis Q3" in doc.text
    assert len(doc.page_starts) == 2 and doc.page_starts[0] == 0
    assert doc.text[doc.page_starts[1] :].startswith("## Refunds\n\nA refund goes back")


def test_a_pdf_without_an_outline_takes_its_headings_from_font_sizes() -> None:
    doc = parse("prds/checkout.pdf", make.pdf(make.SPEC, outline=False))

    assert _blocks(doc.text)[:4] == SECTIONS_AS_MARKDOWN
    assert "\n\n## Refunds\n\n" in doc.text
    assert doc.title == "Checkout"  # no metadata title: the first heading


def test_a_word_file_keeps_heading_styles_paragraphs_and_its_table_as_rows() -> None:
    doc = parse("prds/checkout.docx", make.docx(make.SPEC, title="Checkout PRD"))

    assert doc.kind == "prd" and doc.title == "Checkout PRD"
    assert _blocks(doc.text) == [
        *SECTIONS_AS_MARKDOWN,
        PIPE_TABLE,
        "## Refunds",
        make.SPEC[2].paragraphs[0],
    ]
    assert doc.page_starts == ()


def test_an_html_export_keeps_headings_and_tables_and_drops_scripts_and_styles() -> None:
    doc = parse("prds/checkout.html", make.page_html(make.SPEC, title="Checkout PRD").encode())

    assert doc.title == "Checkout PRD"
    assert _blocks(doc.text) == [
        *SECTIONS_AS_MARKDOWN,
        PIPE_TABLE,
        "## Refunds",
        make.SPEC[2].paragraphs[0],
    ]
    assert "tracking" not in doc.text and "navy" not in doc.text


def test_html_reads_its_declared_charset_line_breaks_lists_and_entities() -> None:
    page = (
        "<html><head><meta charset='iso-8859-1'></head><body><h3>Caf\xe9</h3>"
        "<p>One\n  paragraph<br>two lines &amp; more</p><ul><li>first</li><li>second</li></ul>"
        "<pre>keep\n  this</pre></body></html>"
    ).encode("latin-1")
    doc = parse("prds/cafe.htm", page)

    assert _blocks(doc.text) == [
        "### Café",
        "One paragraph\ntwo lines & more",
        "- first",
        "- second",
        "keep\n  this",
    ]


def test_documents_are_prds_wherever_they_sit() -> None:
    for path in ("prds/a.pdf", "designs/T_team/a.docx", "a.html", "prds/b.HTM"):
        assert file_kind(path) == "prd", path


# --- hostile files -----------------------------------------------------------------------------

_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
_SPEC_PDF = make.pdf(make.SPEC)
_SPEC_DOCX = make.docx(make.SPEC)

FAILED = {
    "png.pdf": (_PNG, "not a PDF: the file is a PNG image"),
    "text.pdf": (b"# Notes\n\nJust Markdown.\n", "not a PDF: the file is text"),
    "png.docx": (_PNG, "not a Word .docx document: the file is a PNG image"),
    "text.docx": (b"plain words", "not a Word .docx document: the file is text"),
    "pdf.docx": (_SPEC_PDF, "not a Word .docx document: the file is a PDF"),
    "legacy.docx": (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64,
        "not a Word .docx document: the file is a legacy Office 97-2003 file (.doc, .xls)",
    ),
    "png.html": (_PNG, "not an HTML document: the file is a PNG image"),
    "pdf.html": (_SPEC_PDF, "not an HTML document: the file is a PDF"),
    "latin1.html": (
        b"<p>caf\xe9</p>",
        "HTML is not valid utf-8 (byte 6); declare its <meta charset>",
    ),
    "locked.pdf": (
        make.pdf(make.SPEC, password="s3cret"),
        "PDF is encrypted with a password: remove the password to index it",
    ),
    "truncated.pdf": (_SPEC_PDF[: len(_SPEC_PDF) // 2], "corrupt PDF: "),
    "truncated.docx": (_SPEC_DOCX[: len(_SPEC_DOCX) // 2], "corrupt Word document (broken zip"),
    "zip.docx": (b"PK\x03\x04" + b"\x00" * 26, "corrupt Word document (broken zip"),
    "bomb.docx": (
        make.zip_bomb_docx(210),
        "Word document would inflate to 210 MB (over 200 MB): a zip bomb or not a document",
    ),
}
IGNORED = {
    "scan.pdf": (make.scanned_pdf(), "no text layer (a scan or images only); OCR is not supported"),
    "images.docx": (make.docx([], images_only=True), "Word document holds no text"),
    "scripts.html": (b"<script>alert(1)</script><style>p{}</style>", "HTML holds no text"),
    "empty.pdf": (b"", "empty file (0 bytes)"),
    "empty.docx": (b"", "empty file (0 bytes)"),
}


@pytest.mark.parametrize("name", sorted(FAILED))
def test_a_broken_or_lying_file_fails_with_its_reason(name: str) -> None:
    data, reason = FAILED[name]
    with pytest.raises(ParseError) as info:
        parse(f"prds/{name}", data)
    assert not isinstance(info.value, NothingToIndex)
    assert info.value.message.startswith(reason), info.value.message
    assert info.value.path == f"prds/{name}"


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_a_file_with_no_readable_text_is_ignored_with_its_reason(name: str) -> None:
    data, reason = IGNORED[name]
    with pytest.raises(NothingToIndex, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse(f"prds/{name}", data)


def test_a_pdf_locked_only_by_its_owner_opens_without_a_password() -> None:
    doc = parse("prds/owner-locked.pdf", make.pdf(make.SPEC, password=""))
    assert _blocks(doc.text)[:4] == SECTIONS_AS_MARKDOWN


def test_a_zip_that_is_not_a_word_file_says_so() -> None:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "not word")
    with pytest.raises(ParseError, match="a zip archive without word/document.xml"):
        parse("prds/notes.docx", out.getvalue())


def test_a_pdf_that_reads_too_slowly_fails_between_pages_instead_of_holding_the_worker() -> None:
    ticks = itertools.count()
    data = make.pdf(make.pages_of_prose(5))

    with pytest.raises(ParseError, match=r"PDF took over 2 s to read; stopped at page 3 of 5"):
        read_pdf("prds/slow.pdf", data, seconds=2, clock=lambda: float(next(ticks)))


def test_hostile_documents_fail_or_are_ignored_alone_and_the_rest_land() -> None:
    good = _good_files()
    files = {**good, **{f"prds/{n}": d for n, (d, _) in {**FAILED, **IGNORED}.items()}}
    pipeline = _pipeline(MemorySource(files))

    summary = run_in_threads(IngestRun(pipeline), concurrency=2)

    by_path = {r.path: r for r in summary.results}
    assert {p for p, r in by_path.items() if r.status == "ingested"} == set(good)
    for name, (_, reason) in FAILED.items():
        assert by_path[f"prds/{name}"].status == "failed", name
        assert by_path[f"prds/{name}"].error.startswith(reason), name
    for name, (_, reason) in IGNORED.items():
        assert by_path[f"prds/{name}"].status == "ignored", name
        assert reason in by_path[f"prds/{name}"].error, name
    assert summary.counts == counts(ingested=len(good), failed=len(FAILED), ignored=len(IGNORED))


# --- incremental ---------------------------------------------------------------------------------


def test_an_edited_pdf_re_embeds_only_its_changed_chunks_and_the_plan_prices_them() -> None:
    sections = make.pages_of_prose(8)
    source = MemorySource({"prds/long.pdf": make.pdf(sections)})
    pipeline = _pipeline(source)
    embedder: HashEmbedder = pipeline.embedder  # type: ignore[assignment]
    first = run_in_threads(IngestRun(pipeline), concurrency=1)
    total = sum(count_tokens(t) for batch in embedder.calls for t in batch)
    assert first.counts == counts(ingested=1) and first.chunks > 8

    edited = list(sections)
    paragraphs = list(edited[5].paragraphs)
    paragraphs[1] = "EDITED: the refund window is now ten working days for every market."
    edited[5] = dataclasses.replace(edited[5], paragraphs=paragraphs)
    source.files["prds/long.pdf"] = make.pdf(edited)
    dry = IngestRun(pipeline)
    dry.prepare()
    plan = dry.plan()
    embedder.calls.clear()

    summary = run_in_threads(IngestRun(pipeline), concurrency=1)

    [result] = summary.results
    sent = [t for batch in embedder.calls for t in batch]
    resent = sum(count_tokens(t) for t in sent)
    assert result.status == "ingested" and any("EDITED" in t for t in sent)
    # What the model reads names the chunk's section path: only Section 6 is re-embedded.
    assert all("Section 6" in t and "Section 7" not in t for t in sent), sent
    assert resent < total / 4
    assert result.reused == result.chunks - len(sent)
    assert plan.changed == ("prds/long.pdf",)
    assert (plan.chunks_to_embed, plan.tokens_to_embed) == (len(sent), resent)


# --- through the sources ------------------------------------------------------------------------


def _good_files() -> dict[str, bytes]:
    return {
        "prds/checkout.pdf": make.pdf(make.SPEC, title="Checkout PRD"),
        "prds/checkout.docx": make.docx(make.SPEC),
        "prds/checkout.html": make.page_html(make.SPEC).encode(),
        "prds/checkout.md": make.markdown(make.SPEC).encode(),
        "designs/T_team/checkout.json": b'{"title": "Checkout", "summary": "Pay in one step."}',
    }


def _pipeline(source: Source) -> Pipeline:
    return Pipeline(
        source=source, embedder=HashEmbedder(), store=MemoryStore(), chunking=ChunkingOptions(96, 8)
    )


def _searchable(pipeline: Pipeline, words: str) -> set[str]:
    return {hit.source_path for hit in pipeline.store.hybrid_search(words, None, limit=20)}


def test_a_folder_of_pdf_word_html_and_markdown_ingests_in_one_run(tmp_path: Path) -> None:
    for rel, data in {**_good_files(), "prds/diagram.png": _PNG}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    pipeline = _pipeline(LocalSource(tmp_path))

    summary = run_in_threads(IngestRun(pipeline), concurrency=2)

    assert summary.counts == counts(ingested=5, ignored=1)
    documents = {p for p in _good_files() if p.startswith("prds/")}
    assert _searchable(pipeline, "Borealis wallet") == documents  # the table, in every format
    assert _searchable(pipeline, "refund working days") == documents  # the second page


@pytest.fixture
def storage() -> Iterator[FakeStorage]:
    with FakeStorage() as server:
        server.create_bucket("knowledge")
        yield server


def test_a_bucket_of_documents_ingests_and_an_unchanged_rerun_downloads_nothing(
    storage: FakeStorage,
) -> None:
    big = make.pdf(make.pages_of_prose(40))
    for path, data in {**_good_files(), "prds/locked.pdf": FAILED["locked.pdf"][0]}.items():
        storage.put("knowledge", path, data)
    storage.put("knowledge", "prds/big.pdf", big)
    source = SupabaseSource(storage.url, SERVICE_KEY, bucket="knowledge", prefixes=("",))
    pipeline = _pipeline(source)
    try:
        summary = run_in_threads(IngestRun(pipeline, max_file_bytes=len(big) - 1), concurrency=2)

        assert summary.counts == counts(ingested=5, failed=1, ignored=1)
        assert "prds/big.pdf" not in storage.downloads  # over the cap: never downloaded
        assert _searchable(pipeline, "Borealis wallet") >= {
            "prds/checkout.pdf",
            "prds/checkout.docx",
        }
        storage.downloads.clear()

        again = run_in_threads(IngestRun(pipeline, max_file_bytes=len(big) - 1), concurrency=2)

        assert storage.downloads == []
        # the locked PDF is still failed, unchanged since: reported again, never fetched
        assert again.counts == counts(skipped=5, failed=1, ignored=1)
    finally:
        pipeline.close()


# --- pages ---------------------------------------------------------------------------------------


def test_a_stretch_of_text_knows_its_pages() -> None:
    from tidal.documents.pages import page_span

    starts = (0, 100, 250)
    assert page_span((), 0, 10) is None
    assert page_span(starts, 0, 10) == [1, 1]
    assert page_span(starts, 90, 10) == [1, 1]  # ends on the last character of page 1
    assert page_span(starts, 90, 11) == [1, 2]
    assert page_span(starts, 100, 300) == [2, 3]
    assert page_span(starts, 260, 5) == [3, 3]
    assert page_span((0, 0, 40), 10, 5) == [2, 2]  # an empty first page starts where page 2 does


# --- the real flow -----------------------------------------------------------------------------


def test_the_flow_lands_documents_in_postgres_and_an_unchanged_rerun_skips_them(
    tmp_path: Path, env: str
) -> None:
    import psycopg

    from tests.flowkit import chunks_by_path, run

    hostile = {"prds/scan.pdf": IGNORED["scan.pdf"][0], "prds/png.pdf": FAILED["png.pdf"][0]}
    for rel, data in {**_good_files(), **hostile}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)

    state, summary = run(tmp_path)

    assert state.is_failed()  # png.pdf, alone
    assert summary.summary.counts == counts(ingested=5, failed=1, ignored=1)
    assert set(chunks_by_path(env)) == set(_good_files())
    with psycopg.connect(env) as conn:
        found = conn.execute(
            "select distinct source_path from documents where content like '%| Wallet | Borealis%'"
        ).fetchall()
    assert {path for (path,) in found} == {
        "prds/checkout.docx",
        "prds/checkout.html",
        "prds/checkout.md",
    }
    with psycopg.connect(env) as conn:
        pages = conn.execute(
            "select metadata->'pages' from documents where source_path = 'prds/checkout.pdf'"
        ).fetchall()
    assert pages and all(p is not None for (p,) in pages)
    assert {n for (p,) in pages for n in p} == {1, 2}  # its text runs over two pages

    state, again = run(tmp_path)

    # the scan is in sync as no chunks (skipped), the PNG still failed: neither is read again
    assert again.summary.counts == counts(skipped=6, failed=1)


def test_each_chunk_of_a_pdf_carries_the_pages_it_lies_on() -> None:
    data = make.pdf(make.pages_of_prose(6))
    source = MemorySource({"prds/long.pdf": data, "prds/long.md": b"# Long\n\nNo pages here.\n"})
    pipeline = _pipeline(source)

    run_in_threads(IngestRun(pipeline), concurrency=1)

    document = parse("prds/long.pdf", data)
    stored = pipeline.store.index.chunks  # type: ignore[attr-defined]
    rows = [s for key, rows in stored.items() if key[1] == "prds/long.pdf" for s in rows]
    assert len(rows) > 6
    for row in rows:
        chunk = row.embedded.chunk
        assert document.text[chunk.start : chunk.start + len(chunk.text)] == chunk.text
        first, last = row.metadata["pages"]
        # Section n is page n: the chunk's pages are those of the sections it holds.
        held = [n for n in range(1, 7) if f"Section {n}\n" in chunk.text + "\n"]
        assert all(first <= n <= last for n in held), (row.metadata, held)
        assert 1 <= first <= last <= 6
    assert {p for row in rows for p in row.metadata["pages"]} == set(range(1, 7))
    [md] = [s for key, rows in stored.items() if key[1] == "prds/long.md" for s in rows]
    assert "pages" not in md.metadata
