"""Real PDF, Word and HTML files made by libraries, for the tests and bench/documents.py.

A document is a list of ``Section``s; each maker lays the same sections out in its format, so
a test can say what text each must yield, and the bench can compare formats on the same text.
"""

from __future__ import annotations

import html
import io
import random
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: Sequence[str] = ()
    level: int = 1
    table: Sequence[Sequence[str]] = ()
    """Rows, the first the header."""
    new_page: bool = False
    """PDF: the section starts a page."""
    extra: dict[str, str] = field(default_factory=dict)


SPEC = [
    Section(
        "Checkout",
        ["A traveller pays for a booking in one step, with a saved card or a wallet."],
    ),
    Section(
        "Payment methods",
        ["Cards and wallets are accepted in every market we sell in."],
        level=2,
        table=[
            ("Method", "Owner", "Launch"),
            ("Card", "Aurora", "Q1"),
            ("Wallet", "Borealis", "Q3"),
        ],
    ),
    Section(
        "Refunds",
        ["A refund goes back to the method that paid, within five working days."],
        level=2,
        new_page=True,
    ),
]
"""A small PRD: a title section, a table, a second page."""


def pdf(
    sections: Sequence[Section],
    *,
    title: str | None = None,
    outline: bool = True,
    password: str | None = None,
) -> bytes:
    """A PDF with one text line per heading (bold, larger) and wrapped paragraphs; with
    ``outline`` its bookmarks name the sections."""
    from fpdf import FPDF

    doc = FPDF()
    doc.set_auto_page_break(True, margin=15)
    if title:
        doc.set_title(title)
    if password is not None:
        doc.set_encryption(owner_password="owner", user_password=password)
    doc.add_page()
    for i, section in enumerate(sections):
        if section.new_page and i:
            doc.add_page()
        if outline:
            doc.start_section(section.title, level=section.level - 1)
        doc.set_font("helvetica", "B", 20 - 2 * section.level)
        doc.multi_cell(0, 10, section.title, new_x="LMARGIN", new_y="NEXT")
        doc.set_font("helvetica", size=11)
        for paragraph in section.paragraphs:
            doc.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
            doc.ln(4)
        if section.table:
            with doc.table() as grid:
                for row in section.table:
                    cells = grid.row()
                    for cell in row:
                        cells.cell(cell)
            doc.ln(4)
    return bytes(doc.output())


def scanned_pdf(pages: int = 2) -> bytes:
    """Pages holding only a picture of text: a scan, with no text layer."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(picture).text((20, 80), "Scanned requirements", fill="black")
    doc = FPDF()
    for _ in range(pages):
        doc.add_page()
        doc.image(picture, x=10, y=10, w=180)
    return bytes(doc.output())


def docx(
    sections: Sequence[Section], *, title: str | None = None, images_only: bool = False
) -> bytes:
    """A Word file with Heading n styles, Normal paragraphs and a grid table."""
    import docx as python_docx

    doc = python_docx.Document()
    if title:
        doc.core_properties.title = title
    if images_only:
        from PIL import Image

        picture = io.BytesIO()
        Image.new("RGB", (60, 40), "navy").save(picture, format="PNG")
        picture.seek(0)
        doc.add_picture(picture)
    for section in sections:
        doc.add_heading(section.title, level=section.level)
        for paragraph in section.paragraphs:
            doc.add_paragraph(paragraph)
        if section.table:
            grid = doc.add_table(rows=len(section.table), cols=len(section.table[0]))
            for r, row in enumerate(section.table):
                for c, cell in enumerate(row):
                    grid.cell(r, c).text = cell
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def zip_bomb_docx(inflated_mb: int = 210) -> bytes:
    """A .docx whose parts inflate to ``inflated_mb`` MB of zeros from a few hundred KB."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
        zeros = b"\0" * 1_000_000
        with archive.open("word/media/padding.bin", "w", force_zip64=True) as part:
            for _ in range(inflated_mb):
                part.write(zeros)
    return out.getvalue()


def page_html(sections: Sequence[Section], *, title: str | None = None) -> str:
    """An HTML export: a head with a style and a script, h1-h6, paragraphs, a table."""
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>"]
    if title:
        out.append(f"<title>{html.escape(title)}</title>")
    out.append("<style>h1 { color: navy }</style><script>var tracking = 'no';</script>")
    out.append("</head><body>")
    for section in sections:
        n = min(section.level, 6)
        out.append(f"<h{n}>{html.escape(section.title)}</h{n}>")
        out += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        if section.table:
            head, *rows = section.table
            out.append("<table><thead><tr>")
            out += [f"<th>{html.escape(c)}</th>" for c in head]
            out.append("</tr></thead><tbody>")
            for row in rows:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out)


def markdown(sections: Sequence[Section]) -> str:
    """The same sections as a Markdown PRD."""
    out: list[str] = []
    for section in sections:
        out.append(f"{'#' * section.level} {section.title}")
        out += list(section.paragraphs)
        if section.table:
            head, *rows = section.table
            out.append(
                "\n".join(
                    ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
                    + ["| " + " | ".join(row) + " |" for row in rows]
                )
            )
    return "\n\n".join(out) + "\n"


_WORDS = [
    "traveller",
    "booking",
    "refund",
    "wallet",
    "card",
    "offline",
    "ticket",
    "seat",
    "itinerary",
    "partner",
    "hotel",
    "flight",
    "delay",
    "notice",
    "receipt",
    "currency",
    "invoice",
    "loyalty",
    "points",
    "upgrade",
    "baggage",
    "gate",
    "boarding",
    "transfer",
    "station",
    "platform",
    "route",
    "map",
    "sync",
    "conflict",
    "review",
    "release",
]


def pages_of_prose(pages: int, *, seed: int = 7) -> list[Section]:
    """About ``pages`` A4 pages of a PRD: a section per page, three paragraphs and a table row
    set every other page."""
    rng = random.Random(seed)

    def sentence() -> str:
        words = rng.choices(_WORDS, k=rng.randint(8, 16))
        return " ".join(words).capitalize() + "."

    sections = []
    for n in range(pages):
        paragraphs = [" ".join(sentence() for _ in range(5)) for _ in range(3)]
        table = (
            [("Item", "Owner", "Status")] + [(f"Item {n}.{i}", "Aurora", "open") for i in range(4)]
            if n % 2
            else ()
        )
        sections.append(
            Section(f"Section {n + 1}", paragraphs, level=1 if n % 3 == 0 else 2, table=table,
                    new_page=True)
        )  # fmt: skip
    return sections
