"""tidal.parsing.parse: bytes → Document, or a ParseError that names the file and the reason."""

from __future__ import annotations

import json

import pytest

from tidal.errors import ParseError, PermanentError
from tidal.parsing import parse

DESIGN = "designs/Aurora_team/checkout.json"
PRD_MD = "prds/checkout.md"
PRD_TXT = "prds/checkout.txt"


def _json(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


def _parse_error(path: str, data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(path, data)
    return info.value


# --- design JSON -----------------------------------------------------------------------------


def test_design_json_keeps_each_scalars_key_path() -> None:
    doc = parse(DESIGN, _json({"screens": [{}, {}, {"components": [{"label": "Save"}]}]}))
    assert doc.text.splitlines() == ["screens[2].components[0].label: Save"]


def test_design_json_one_line_per_scalar_in_document_order() -> None:
    value = {
        "title": "Checkout",
        "screens": [
            {"name": "Cart", "items": [1, 2]},
            {"hidden": True, "note": None, "empty": "", "blank": "   ", "tags": [], "meta": {}},
        ],
        "owner": {"team": "Aurora", "reviewers": ["Lina", "Omar"]},
    }
    doc = parse(DESIGN, _json(value))
    assert doc.text == "\n".join(
        [
            "title: Checkout",
            "screens[0].name: Cart",
            "screens[0].items[0]: 1",
            "screens[0].items[1]: 2",
            "screens[1].hidden: true",
            "owner.team: Aurora",
            "owner.reviewers[0]: Lina",
            "owner.reviewers[1]: Omar",
        ]
    )


def test_design_json_keeps_bools_and_numbers() -> None:
    doc = parse(
        DESIGN,
        _json(
            {"label": "Pay", "enabled": True, "disabled": False, "count": 0, "ratio": 0.5, "n": -3}
        ),
    )
    lines = doc.text.splitlines()
    assert "enabled: true" in lines
    assert "disabled: false" in lines
    assert "count: 0" in lines
    assert "ratio: 0.5" in lines
    assert "n: -3" in lines


def test_design_json_drops_nulls_and_empty_strings() -> None:
    doc = parse(DESIGN, _json({"label": "Pay", "hint": None, "alt": "", "tooltip": " \n\t"}))
    assert doc.text == "label: Pay"
    assert "hint" not in doc.text
    assert "alt" not in doc.text
    assert "tooltip" not in doc.text


def test_design_json_top_level_list() -> None:
    doc = parse(DESIGN, _json(["Save", {"label": "Cancel"}]))
    assert doc.text.splitlines() == ["[0]: Save", "[1].label: Cancel"]


def test_design_json_non_ascii_text_is_kept() -> None:
    doc = parse(DESIGN, '{"label": "Énregistrer — 保存 ✅"}'.encode())
    assert doc.text == "label: Énregistrer — 保存 ✅"


def test_design_json_with_bom_and_crlf() -> None:
    raw = b'\xef\xbb\xbf{\r\n  "title": "Dark mode",\r\n  "summary": "Tokens"\r\n}\r\n'
    doc = parse(DESIGN, raw)
    assert doc.text == "title: Dark mode\nsummary: Tokens"
    assert doc.title == "Dark mode"
    assert doc.kind == "design"


# --- markdown / text -------------------------------------------------------------------------


def test_markdown_text_is_kept_verbatim() -> None:
    text = "# Checkout\n\nUsers pay with **cards**.\n\n## Goals\n- fast\n"
    doc = parse(PRD_MD, text.encode())
    assert doc.text == text
    assert doc.path == PRD_MD


def test_utf8_bom_is_accepted_and_dropped() -> None:
    doc = parse(PRD_MD, b"\xef\xbb\xbf# Offline sync\n\nBody\n")
    assert doc.text == "# Offline sync\n\nBody\n"
    assert not doc.text.startswith("\ufeff")
    assert doc.title == "Offline sync"


@pytest.mark.parametrize(
    "raw",
    [b"# T\r\n\r\nline one\r\nline two\r\n", b"# T\r\rline one\rline two\r"],
    ids=["crlf", "cr"],
)
def test_line_endings_are_normalised(raw: bytes) -> None:
    doc = parse(PRD_TXT, raw)
    assert doc.text == "# T\n\nline one\nline two\n"
    assert "\r" not in doc.text


# --- kind ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data", "kind"),
    [
        ("designs/Aurora_team/dark-mode.json", b'{"title": "Dark"}', "design"),
        ("designs/Borealis_team/map-pins.JSON", b'{"title": "Pins"}', "design"),
        ("prds/offline-sync.md", b"# Offline\n", "prd"),
        ("prds/push.txt", b"Push notifications\n", "prd"),
        ("prds/notes.markdown", b"notes\n", "prd"),
        ("prds/UPPER.MD", b"notes\n", "prd"),
    ],
)
def test_kind_comes_from_folder_and_extension(path: str, data: bytes, kind: str) -> None:
    assert parse(path, data).kind == kind


# --- title -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data", "title"),
    [
        (PRD_MD, b"# Expense splitting\n\nBody", "Expense splitting"),
        (PRD_MD, b"Intro line\n\n#   Spaced title  \n\nBody", "Spaced title"),
        (PRD_MD, b"## Only a subheading\n\n# Real title\n", "Real title"),
        (PRD_MD, b"Just words, no heading\n", "checkout"),
        (PRD_MD, b"#NoSpace is not a heading\n", "checkout"),
        ("prds/push-notifications.txt", b"Push notifications\n", "push-notifications"),
        (DESIGN, b'{"summary": "s", "title": "Checkout v2"}', "Checkout v2"),
        (DESIGN, b'{"title": "   ", "summary": "s"}', "checkout"),
        (DESIGN, b'{"summary": "no title here"}', "checkout"),
        (DESIGN, b'{"screens": [{"title": "Nested"}]}', "checkout"),
    ],
)
def test_title(path: str, data: bytes, title: str) -> None:
    assert parse(path, data).title == title


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data", "reason"),
    [
        (PRD_MD, b"", "empty"),
        (DESIGN, b"", "empty"),
        (PRD_TXT, b"hello\x00world", "binary"),
        (DESIGN, b'{"a": "b"}\x00\x00', "binary"),
        (PRD_MD, b"caf\xe9 au lait", "UTF-8"),
        (PRD_MD, b"ok \xc3", "UTF-8"),
        (DESIGN, b'{"label": "\xff"}', "UTF-8"),
        (DESIGN, b'{"a": 1, "b": 2.5, "c": null}', "no text"),
        (DESIGN, b'{"a": "", "b": ["  ", null], "c": {}}', "nothing to index"),
        (DESIGN, b"[]", "nothing to index"),
        (DESIGN, b"42", "no text"),
        (PRD_MD, b"   \n\n\t  \r\n", "nothing to index"),
        (PRD_TXT, b"\xef\xbb\xbf\n\n", "nothing to index"),
        ("designs/Aurora_team/mock.png", b"\x89PNG\r\n\x1a\n", "unsupported"),
        ("designs/Aurora_team/mock.png", b"# looks like text", "unsupported"),
        ("prds/README", b"# no extension", "unsupported"),
        ("prds/slides.pptx", b"PK\x03\x04", "unsupported"),
    ],
)
def test_parse_errors_name_the_path_and_the_reason(path: str, data: bytes, reason: str) -> None:
    err = _parse_error(path, data)
    assert isinstance(err, PermanentError)
    assert err.path == path
    assert reason.lower() in err.message.lower()
    assert str(err).startswith(f"{path}: ")
    assert reason.lower() in str(err).lower()


@pytest.mark.parametrize(
    "raw",
    [b'{"enabled": true, "visible": false}', b'{"count": 3, "flags": [true, null]}', b"true"],
)
def test_json_with_only_booleans_and_numbers_has_no_text(raw: bytes) -> None:
    from tidal.errors import NothingToIndex

    # Booleans are kept as "true"/"false" lines, but they are not string text: a design
    # whose only values are flags and numbers holds nothing worth embedding.
    err = _parse_error(DESIGN, raw)
    assert "no text" in err.message
    assert err.path == DESIGN
    assert not isinstance(err, NothingToIndex)  # values without words: the file is broken


@pytest.mark.parametrize(
    ("path", "data"),
    [(PRD_MD, b""), (DESIGN, b""), (PRD_MD, b"  \n\t\n"), (DESIGN, b" {} "), (DESIGN, b"[]")],
)
def test_an_empty_document_is_nothing_to_index_not_a_broken_file(path: str, data: bytes) -> None:
    from tidal.errors import NothingToIndex

    assert isinstance(_parse_error(path, data), NothingToIndex)


def test_invalid_json_says_line_and_column() -> None:
    raw = b'{\n  "title": "Checkout",\n  "screens": [1, 2,,]\n}'
    try:
        json.loads(raw)
    except json.JSONDecodeError as exc:
        expected = exc
    err = _parse_error(DESIGN, raw)
    assert err.path == DESIGN
    assert str(err).startswith(f"{DESIGN}: ")
    assert "invalid JSON" in err.message
    assert f"line {expected.lineno}" in err.message
    assert f"column {expected.colno}" in err.message
    assert expected.lineno == 3  # sanity: the error really is on the third line


def test_invalid_json_position_counts_crlf_lines() -> None:
    err = _parse_error(DESIGN, b'{\r\n"a": "b",\r\n"c": }\r\n')
    assert "line 3" in err.message


def test_truncated_json_is_a_parse_error() -> None:
    err = _parse_error(DESIGN, b'{"title": "Checkout", "screens": [')
    assert "invalid JSON" in err.message
    assert "line 1" in err.message


def test_multiline_json_strings_stay_on_their_key_path_line() -> None:
    doc = parse("designs/T/x.json", b'{"rationale": ["first line\\r\\nsecond   line"]}')
    assert doc.text == "rationale[0]: first line second line"


def test_a_nul_byte_anywhere_marks_the_file_binary() -> None:
    data = b"# Title\n" + b"a" * 20000 + b"\x00"
    with pytest.raises(ParseError, match="binary"):
        parse("prds/late-nul.md", data)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_announced_by_its_bom_is_read(encoding: str) -> None:
    import codecs

    bom = {"utf-16": b"", "utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}
    data = bom[encoding] + "# Résumé\r\n\r\nÜber text.\r\n".encode(encoding)
    document = parse("prds/notes.md", data)
    assert document.text == "# Résumé\n\nÜber text.\n" and document.title == "Résumé"


def test_utf16_without_a_bom_is_refused_with_a_hint() -> None:
    with pytest.raises(ParseError, match="UTF-16 text needs a byte-order mark"):
        parse("prds/notes.md", "# Title\n".encode("utf-16-le"))
