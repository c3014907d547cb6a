"""The one front-matter reader: the same rules, and the same errors, for personas and tieto."""

from __future__ import annotations

from pathlib import Path

import pytest

from runa.frontmatter import FrontMatterError, split
from runa.splinfer.personas import PersonaError, parse_persona
from runa.tieto.errors import FrontMatterError as TietoFrontMatterError
from runa.tieto.sources import parse


def test_keys_values_body_and_the_line_of_each_key() -> None:
    doc = split("---\ntitle: A\n\n# a comment\nyear: 2021\n...\nBody\n", "f.md")
    assert doc.meta == {"title": "A", "year": 2021}
    assert doc.key_lines == {"title": 2, "year": 5}
    assert (doc.body, doc.body_line) == ("Body\n", 7)


def test_fences_may_carry_trailing_blanks_and_a_first_line_else_is_all_body() -> None:
    assert split("--- \t\na: 1\n---  \nB", "f.md").meta == {"a": 1}
    assert split(" ---\na: 1\n---\nB", "f.md").meta == {}


def test_front_matter_of_only_comments_has_no_keys() -> None:
    doc = split("---\n# nothing yet\n---\nBody", "f.md")
    assert (doc.meta, doc.body, doc.body_line) == ({}, "Body", 4)


def test_a_merge_key_is_allowed_and_the_keys_it_brings_get_its_line() -> None:
    doc = split("---\nbase: &b {x: 1, z: 3}\n<<: *b\nx: 2\n---\n", "f.md")
    assert doc.meta == {"x": 2, "z": 3, "base": {"x": 1, "z": 3}}
    assert doc.key_lines == {"x": 4, "z": 3, "base": 2}


@pytest.mark.parametrize(("text", "line", "words"), [
    ("---\ntitle: A\n", 1, "front matter opened with '---' has no closing '---' line"),
    ("---\ntitle: [x\n---\n", 2, "front matter is not valid YAML: "),
    ("---\n- a\n---\n", 2, "front matter must be 'key: value' lines, not a list"),
    ("---\njust words\n---\n", 2, "front matter must be 'key: value' lines, not a single value"),
    ("---\ntitle: A\n2021: x\n---\n", 3, "front matter keys must be words"),
    ("---\nyes: 1\n---\n", 2, "front matter keys must be words"),
    ("---\ntitle: A\n\ntitle: B\n---\n", 4, "title is already set on line 2"),
    ("---\na: !!python/name:os.system\n---\n", 2, "front matter is not valid YAML: "),
])  # fmt: skip
def test_broken_front_matter_is_one_error_naming_the_file_and_line(
        tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "notes.md"
    with pytest.raises(FrontMatterError) as caught:
        split(text, path)
    assert (caught.value.line, caught.value.exit_code) == (line, 65)
    assert str(caught.value).startswith(f"{path}:{line}: {words}")
    # a persona and a tieto document with the same front matter fail the same way
    with pytest.raises(PersonaError) as persona:
        parse_persona(path, text + "body\n", warn=lambda _: None)
    with pytest.raises(TietoFrontMatterError) as document:
        parse(path, (text + "body\n").encode(), "0" * 64)
    assert str(persona.value) == str(document.value) == str(caught.value)
