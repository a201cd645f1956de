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


def test_design_json_is_rendered_as_headed_sections() -> None:
    doc = parse(DESIGN, _json({"screens": [{}, {}, {"components": [{"label": "Save"}]}]}))
    assert doc.text.splitlines() == ["## Screen: 3", "", "### Component: Save"]


def test_design_json_reads_as_a_document_in_document_order() -> None:
    value = {
        "title": "Checkout",
        "screens": [
            {"name": "Cart", "items": [1, 2]},
            {"hidden": True, "note": None, "empty": "", "blank": "   ", "tags": [], "meta": {}},
        ],
        "owner": {"team": "Aurora", "reviewers": ["Lina", "Omar"]},
        "openQuestions": ["Do we keep the promo code field on the cart screen?"],
    }
    doc = parse(DESIGN, _json(value))
    assert doc.text == "\n".join(
        [
            "# Checkout",
            "",
            "Open questions:",
            "- Do we keep the promo code field on the cart screen?",
            "",
            "## Screen: Cart",
            "",
            "Items: 1, 2",
            "",
            "## Screen: 2",
            "",
            "Hidden: yes",
            "",
            "## Owner",
            "",
            "Team: Aurora",
            "Reviewers: Lina, Omar",
            "",
        ]
    )
    assert doc.title == "Checkout"


def test_design_json_keeps_bools_and_numbers() -> None:
    doc = parse(
        DESIGN,
        _json(
            {"label": "Pay", "enabled": True, "disabled": False, "count": 0, "ratio": 0.5, "n": -3}
        ),
    )
    lines = doc.text.splitlines()
    assert "Enabled: yes" in lines
    assert "Disabled: no" in lines
    assert "Count: 0" in lines
    assert "Ratio: 0.5" in lines
    assert "N: -3" in lines


def test_a_number_longer_than_python_converts_is_kept_as_written() -> None:
    digits = "9" * 5000  # int() refuses over 4,300 digits
    doc = parse(DESIGN, f'{{"label": "Pay", "serial": {digits}, "n": 12}}'.encode())
    assert f"Serial: {digits}" in doc.text.splitlines() and "N: 12" in doc.text.splitlines()
    with pytest.raises(ParseError, match="JSON holds no text"):  # digits are not text
        parse(DESIGN, f'{{"serial": {digits}}}'.encode())


def test_design_json_drops_nulls_and_empty_strings() -> None:
    doc = parse(DESIGN, _json({"label": "Pay", "hint": None, "alt": "", "tooltip": " \n\t"}))
    assert doc.text == "Label: Pay\n"
    assert "Hint" not in doc.text
    assert "Alt" not in doc.text
    assert "Tooltip" not in doc.text


def test_design_json_keeps_every_value_of_a_deep_design() -> None:
    """Nothing is lost to the rendering: every scalar of the JSON appears in the text."""
    value = {
        "title": "Map pins",
        "tokens": {"colors": {"pinSelected": "#FF5A5F", "pin_default": "#1F6FEB"}},
        "screens": [
            {
                "name": "Map",
                "components": [
                    {"type": "pin", "states": ["default", "selected", "visited", "disabled"]},
                    {"id": "ST-5", "rules": [{"when": "offline", "then": "grey out pins"}]},
                ],
                "grid": [[1, 2], [3, 4]],
            }
        ],
    }
    doc = parse(DESIGN, _json(value))
    for scalar in ("#FF5A5F", "#1F6FEB", "ST-5", "grey out pins", "offline", "visited"):
        assert scalar in doc.text
    assert "Pin selected: #FF5A5F" in doc.text
    assert "States: default, selected, visited, disabled" in doc.text
    assert "### Component: pin" in doc.text
    assert "#### Rule: offline\n\nThen: grey out pins" in doc.text  # named by its first string
    assert "Grid 1: 1, 2" in doc.text and "Grid 2: 3, 4" in doc.text


def test_a_design_key_never_reads_as_a_heading() -> None:
    from tidal.chunking import sections

    doc = parse(DESIGN, _json({"title": "T", "summary": "s", "# colour": "#fff", "## x": ["a"]}))

    assert "\\# colour: #fff" in doc.text and "\\## x: a" in doc.text
    assert len(sections(doc.text)) == 1  # one section: the keys cut none


def test_design_json_headings_stop_at_markdown_depth() -> None:
    deep: dict = {"label": "leaf"}
    for i in range(10):
        deep = {f"level{i}": deep}
    doc = parse(DESIGN, _json(deep))
    assert "Label: leaf" in doc.text
    assert all(len(line) - len(line.lstrip("#")) <= 6 for line in doc.text.splitlines())


def test_design_json_top_level_list() -> None:
    doc = parse(DESIGN, _json(["Save", {"label": "Cancel"}]))
    assert doc.text.splitlines() == ["Item: Save", "", "# Item: Cancel"]


def test_design_json_non_ascii_text_is_kept() -> None:
    doc = parse(DESIGN, '{"label": "Énregistrer — 保存 ✅"}'.encode())
    assert doc.text == "Label: Énregistrer — 保存 ✅\n"


def test_design_json_with_bom_and_crlf() -> None:
    raw = b'\xef\xbb\xbf{\r\n  "title": "Dark mode",\r\n  "summary": "Tokens"\r\n}\r\n'
    doc = parse(DESIGN, raw)
    assert doc.text == "# Dark mode\n\nSummary: Tokens\n"
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


def test_multiline_json_strings_stay_on_their_line() -> None:
    doc = parse("designs/T/x.json", b'{"rationale": ["first line\\r\\nsecond   line"]}')
    assert doc.text == "Rationale: first line second line\n"


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
