"""LocalSource: lists and serves files under its root, and nothing outside it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tidal.errors import PermanentError, SourceError
from tidal.records import SourceFile, file_kind
from tidal.sources.local import LocalSource


def _write(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    files = {
        "prds/b.md": b"# B\n",
        "prds/a.txt": b"plain a\n",
        "designs/Zeta_team/z.json": b'{"title": "Z"}',
        "designs/Aurora_team/dark-mode.json": b'{"title": "Dark"}',
        "designs/Aurora_team/a b.json": b'{"title": "spaced"}',
        "top.md": "# Top — ünïcode\n".encode(),
        "empty.md": b"",
    }
    for rel, data in files.items():
        _write(root, rel, data)
    return root


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- listing ---------------------------------------------------------------------------------


def test_list_is_sorted_by_posix_path_with_size_and_sha256(corpus: Path) -> None:
    listed = list(LocalSource(corpus).list())
    paths = [f.path for f in listed]
    assert paths == sorted(paths)
    assert paths == [
        "designs/Aurora_team/a b.json",
        "designs/Aurora_team/dark-mode.json",
        "designs/Zeta_team/z.json",
        "empty.md",
        "prds/a.txt",
        "prds/b.md",
        "top.md",
    ]
    for f in listed:
        assert isinstance(f, SourceFile)
        data = (corpus / f.path).read_bytes()
        assert f.size == len(data)
        assert f.content_hash == _sha(data)
        assert len(f.content_hash) == 64
        assert "\\" not in f.path and not f.path.startswith("/")
    by_path = {f.path: f for f in listed}
    assert by_path["empty.md"].size == 0
    assert by_path["top.md"].size == len("# Top — ünïcode\n".encode())


def test_content_hash_changes_with_content(corpus: Path) -> None:
    source = LocalSource(corpus)
    before = {f.path: f.content_hash for f in source.list()}
    (corpus / "prds/a.txt").write_bytes(b"plain a, edited\n")
    after = {f.path: f.content_hash for f in source.list()}
    assert after["prds/a.txt"] != before["prds/a.txt"]
    assert {k: v for k, v in after.items() if k != "prds/a.txt"} == {
        k: v for k, v in before.items() if k != "prds/a.txt"
    }


def test_hidden_files_and_folders_are_skipped(corpus: Path) -> None:
    _write(corpus, ".env", b"SECRET=1")
    _write(corpus, "prds/.draft.md", b"# draft")
    _write(corpus, ".git/config", b"[core]")
    _write(corpus, "designs/.cache/x.json", b'{"title": "cached"}')
    _write(corpus, "designs/Aurora_team/.hidden/deep/y.json", b'{"title": "deep"}')
    paths = [f.path for f in LocalSource(corpus).list()]
    assert len(paths) == 7
    assert not any(part.startswith(".") for p in paths for part in p.split("/"))


def test_empty_root_lists_nothing(tmp_path: Path) -> None:
    assert list(LocalSource(tmp_path).list()) == []


def test_uri_is_the_resolved_root(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(corpus.parent)
    source = LocalSource("corpus")
    assert source.root == corpus.resolve()
    assert source.uri == str(corpus.resolve())


# --- reading ---------------------------------------------------------------------------------


def test_read_returns_the_files_bytes(corpus: Path) -> None:
    source = LocalSource(corpus)
    for f in source.list():
        data = source.read(f)
        assert isinstance(data, bytes)
        assert data == (corpus / f.path).read_bytes()
        assert _sha(data) == f.content_hash


def test_resolve_maps_posix_paths_under_the_root(corpus: Path) -> None:
    source = LocalSource(corpus)
    assert source.resolve("prds/b.md") == corpus.resolve() / "prds" / "b.md"
    assert source.resolve("./prds/b.md") == corpus.resolve() / "prds" / "b.md"


@pytest.mark.parametrize(
    "path",
    ["../outside.txt", "prds/../../outside.txt", "prds/../b.md", "..", "/etc/passwd", "", "."],
)
def test_resolve_and_read_refuse_paths_that_escape(corpus: Path, path: str) -> None:
    (corpus.parent / "outside.txt").write_bytes(b"secret outside the root")
    source = LocalSource(corpus)
    with pytest.raises(SourceError, match="escapes") as info:
        source.resolve(path)
    assert isinstance(info.value, PermanentError)
    assert info.value.path == path
    with pytest.raises(SourceError, match="escapes"):
        source.read(SourceFile(path=path, size=1, content_hash="0" * 64))


def test_symlink_escaping_the_root_is_refused_and_listed_as_ignored(corpus: Path) -> None:
    outside = corpus.parent / "secret.md"
    outside.write_bytes(b"# secret outside")
    os.symlink(outside, corpus / "prds" / "link.md")
    outside_dir = corpus.parent / "elsewhere"
    _write(outside_dir, "leak.md", b"# leak")
    os.symlink(outside_dir, corpus / "prds" / "linked_dir")

    source = LocalSource(corpus)
    listed = {f.path: f for f in source.list()}
    assert listed["prds/link.md"].ignored == "a link to outside the source folder"
    assert listed["prds/linked_dir"].ignored == "a link to outside the source folder"
    assert not any(p.startswith("prds/linked_dir/") for p in listed)
    assert len([f for f in listed.values() if not f.ignored]) == 7

    for rel in ("prds/link.md", "prds/linked_dir/leak.md"):
        with pytest.raises(SourceError, match="escapes") as info:
            source.resolve(rel)
        assert info.value.path == rel
        with pytest.raises(SourceError, match="escapes"):
            source.read(SourceFile(path=rel, size=1, content_hash="0" * 64))


def test_relative_symlink_escaping_the_root_is_refused(corpus: Path) -> None:
    (corpus.parent / "secret.md").write_bytes(b"# secret")
    os.symlink("../../secret.md", corpus / "prds" / "rel-link.md")
    source = LocalSource(corpus)
    [link] = [f for f in source.list() if f.path == "prds/rel-link.md"]
    assert link.ignored == "a link to outside the source folder"
    with pytest.raises(SourceError, match="escapes"):
        source.resolve("prds/rel-link.md")


def test_symlink_to_a_file_inside_the_root_is_fine(corpus: Path) -> None:
    os.symlink(corpus / "prds" / "b.md", corpus / "prds" / "alias.md")
    source = LocalSource(corpus)
    listed = {f.path: f for f in source.list()}
    assert "prds/alias.md" in listed
    alias = listed["prds/alias.md"]
    assert alias.content_hash == listed["prds/b.md"].content_hash
    assert alias.size == listed["prds/b.md"].size
    assert source.read(alias) == b"# B\n"
    assert source.resolve("prds/alias.md") == corpus.resolve() / "prds" / "alias.md"


def test_root_given_through_a_symlink_still_works(corpus: Path, tmp_path: Path) -> None:
    link = tmp_path / "corpus-link"
    os.symlink(corpus, link)
    source = LocalSource(link)
    listed = list(source.list())
    assert len(listed) == 7
    assert source.read(listed[0]) == (corpus / listed[0].path).read_bytes()


def test_file_deleted_after_listing_raises_source_error(corpus: Path) -> None:
    source = LocalSource(corpus)
    listed = {f.path: f for f in source.list()}
    (corpus / "prds" / "b.md").unlink()
    with pytest.raises(SourceError) as info:
        source.read(listed["prds/b.md"])
    assert isinstance(info.value, PermanentError)
    assert info.value.path == "prds/b.md"
    assert str(info.value).startswith("prds/b.md: ")
    assert source.read(listed["prds/a.txt"]) == b"plain a\n"  # the others are unaffected


def test_missing_root_raises_source_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(SourceError, match="does not exist") as info:
        LocalSource(missing)
    assert isinstance(info.value, PermanentError)
    assert "no-such-folder" in str(info.value)


def test_root_that_is_a_file_raises_source_error(tmp_path: Path) -> None:
    file = tmp_path / "corpus.md"
    file.write_bytes(b"# not a folder")
    with pytest.raises(SourceError):
        LocalSource(file)


# --- file_kind -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("designs/Aurora_team/dark-mode.json", "design"),
        ("designs/Aurora_team/DARK.JSON", "design"),
        ("dark-mode.json", "design"),
        ("prds/offline-sync.md", "prd"),
        ("prds/push.txt", "prd"),
        ("prds/notes.markdown", "prd"),
        ("prds/UPPER.MD", "prd"),
        ("designs/Aurora_team/notes.md", "prd"),
        ("prds/data.json", "other"),
        ("designs/Aurora_team/mock.png", "other"),
        ("prds/spec.pdf", "prd"),
        ("designs/Aurora_team/spec.docx", "prd"),
        ("prds/slides.pptx", "other"),
        ("README", "other"),
    ],
)
def test_file_kind(path: str, kind: str) -> None:
    assert file_kind(path) == kind
    assert SourceFile(path=path, size=0, content_hash="").kind == kind


def test_reading_a_folder_is_a_permanent_error(tmp_path: Path) -> None:
    (tmp_path / "prds" / "sub.md").mkdir(parents=True)
    source = LocalSource(tmp_path)
    with pytest.raises(SourceError, match="folder"):
        source.read(SourceFile(path="prds/sub.md", size=0, content_hash="x"))
