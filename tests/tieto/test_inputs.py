"""Reading inputs: front matter, JSONL, and every kind of bad file, each a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from runa.frontmatter import split
from runa.tieto.errors import (
    EmptyInputError,
    FrontMatterError,
    JsonlLineError,
    NotTextError,
)
from runa.tieto.sources import parse, read_bytes, walk


def _parse(path: Path, content: bytes | str):
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    data, sha = read_bytes(path)
    return parse(path, data, sha)


def test_front_matter_and_body_line(tmp_path: Path) -> None:
    doc = _parse(tmp_path / "f.md",
                 "---\ntitle: A\nyear: 2021\ndate: 2021-03-04\ntags: [x, y]\n---\nBody\n")
    [record] = doc.records
    assert record.meta == {"title": "A", "year": 2021, "date": "2021-03-04", "tags": ["x", "y"]}
    assert record.text == "Body\n" and record.line == 7


def test_no_front_matter_is_all_body() -> None:
    doc = split("Just text\n---\nnot front matter\n", "f.txt")
    assert doc.meta == {} and doc.body_line == 1 and doc.body.startswith("Just text")


def test_unclosed_front_matter_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    with pytest.raises(FrontMatterError) as err:
        _parse(tmp_path / "notes/a.md", "---\ntitle: A\nBody without the closing line\n")
    assert str(err.value).startswith(f"{tmp_path}/notes/a.md:1: front matter opened")


def test_broken_yaml_names_the_line_in_the_file(tmp_path: Path) -> None:
    text = "---\ntitle: A\nyear: [2021\nother: 1\n---\nBody\n"
    with pytest.raises(FrontMatterError) as err:
        _parse(tmp_path / "a.md", text)
    assert err.value.line in (3, 4, 5) and "not valid YAML" in str(err.value)


def test_front_matter_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(FrontMatterError, match="key: value"):
        _parse(tmp_path / "a.md", "---\n- a\n- b\n---\nBody\n")


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    with pytest.raises(FrontMatterError, match=r"a\.md:3: title is already set on line 2"):
        _parse(tmp_path / "a.md", "---\ntitle: A\ntitle: B\n---\nBody\n")


def test_empty_and_bodyless_files(tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError, match="empty file"):
        _parse(tmp_path / "e.md", "")
    with pytest.raises(EmptyInputError, match="empty file"):
        _parse(tmp_path / "w.md", "  \n\n")
    with pytest.raises(EmptyInputError, match=r"f\.md:4: no text after the front matter"):
        _parse(tmp_path / "f.md", "---\na: 1\n---\n\n")


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(NotTextError, match="binary file"):
        _parse(tmp_path / "b.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(NotTextError) as err:
        _parse(tmp_path / "l.txt", b"line one\nline two\ncaf" + b"\xe9 latin-1\n")
    assert err.value.line == 3 and "not UTF-8" in str(err.value)


def test_jsonl_broken_line_is_named_and_the_rest_is_kept(tmp_path: Path) -> None:
    source = _parse(tmp_path / "d.jsonl", '{"text": "one", "meta": {"a": 1}}\n\n'
                    '{"text": "two"\n[1, 2]\n{"meta": {}}\n{"text": "x", "meta": 3}\n'
                    '{"text": "six", "meta": null}\n')
    assert [(r.key, r.line, r.text, r.meta) for r in source.records] == [
        ("line 1", 1, "one", {"a": 1}), ("line 7", 7, "six", {})]
    problems = {p.line: p for p in source.problems}
    assert set(problems) == {3, 4, 5, 6}
    assert all(isinstance(p, JsonlLineError) for p in problems.values())
    assert "not valid JSON" in str(problems[3]) and str(problems[3]).startswith(str(tmp_path))
    assert '"text" is missing' in str(problems[5]) and '"meta" must be' in str(problems[6])


def test_jsonl_with_no_good_line_fails(tmp_path: Path) -> None:
    with pytest.raises(JsonlLineError, match=r"d\.jsonl:1: not valid JSON"):
        _parse(tmp_path / "d.jsonl", "nope\n")
    with pytest.raises(EmptyInputError, match='"text" is empty'):
        _parse(tmp_path / "e.jsonl", '{"text": "  "}\n')


def test_walk_picks_known_suffixes_and_skips_hidden(tmp_path: Path) -> None:
    for name in ("a.md", "b.txt", "c.jsonl", "d.pdf", ".hidden.md", "sub/e.markdown",
                 ".git/f.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for _, p in walk([tmp_path])]
    assert found == ["a.md", "b.txt", "c.jsonl", "sub/e.markdown"]
    assert [p for _, p in walk([tmp_path / "d.pdf"])] == [tmp_path / "d.pdf"]
