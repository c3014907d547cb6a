"""The matrix format: every problem names the file, the line and the field; layers; last good."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runa.paths import Paths
from runa.policy import MatrixError, MatrixLibrary, parse_matrix
from runa.policy.files import layers

GOOD = """\
- id: self-harm.end
  category: suicide_self_harm
  weight: heavy
  phrase: end my life
- id: ssn
  category: privacy
  weight: medium
  side: output
  regex: '\\d{3}-\\d{2}-\\d{4}'
  replacement: "[number]"
- id: kill.tokens
  category: violent_crimes
  weight: heavy
  tokens: {tokenizer: "sha256:abc", ids: [5, 6, 7], phrase: kill them}
- id: hopeless
  category: suicide_self_harm
  weight: medium
  exemplar: no reason to keep going
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_every_kind_of_motif_is_read_with_its_fields(tmp_path: Path) -> None:
    motifs = {m.id: m for m in parse_matrix(write(tmp_path / "m.yaml", GOOD))}
    assert motifs["self-harm.end"].side == "both" and motifs["self-harm.end"].line == 1
    assert motifs["ssn"].kind == "regex" and motifs["ssn"].replacement == "[number]"
    tokens = motifs["kill.tokens"].tokens
    assert tokens is not None and tokens.ids == (5, 6, 7) and tokens.phrase == "kill them"
    assert motifs["hopeless"].kind == "exemplar"  # kept for the semantic tier


@pytest.mark.parametrize(("text", "line", "field", "says"), [
    ("- id: a\n  category: hate\n  weight: huge\n  phrase: x y\n", 3, "weight",
     "'huge' is not light, medium or heavy"),
    ("- id: a\n  category: gossip\n  weight: light\n  phrase: x\n", 2, "category",
     "'gossip' is not a category"),
    ("- id: a\n  category: hate\n  weight: light\n", 1, "phrase",
     "exactly one of phrase, regex, tokens or exemplar (this one has none)"),
    ("- id: a\n  category: hate\n  weight: light\n  phrase: x\n  regex: y\n", 1, "phrase",
     "(this one has phrase and regex)"),
    ("- id: a\n  category: hate\n  weight: light\n  regex: '(unclosed'\n", 4, "regex",
     "is not a regular expression"),
    ("- id: a\n  category: hate\n  weight: light\n  phrase: x\n  colour: red\n", 5, "colour",
     "is not a motif field"),
    ("- id: a\n  category: hate\n  weight: light\n  side: input\n  phrase: x\n", 4, "side",
     "'input' is not prompt, output or both"),
    ("- id: a\n  category: hate\n  weight: light\n  tokens: {tokenizer: t, ids: [1, -2]}\n",
     4, "tokens.ids", "must be a non-empty list of token ids"),
    ("- id: a\n  category: hate\n  weight: light\n  phrase: x\n"
     "- id: a\n  category: hate\n  weight: light\n  phrase: y\n", 5, "id",
     "'a' is already used on line 1"),
    ("- id: a\n  category: hate\n weight: light\n", 3, None, "not valid YAML"),
])
def test_a_malformed_motif_names_the_file_line_and_field(tmp_path: Path, text: str, line: int,
                                                         field: str | None, says: str) -> None:
    path = write(tmp_path / "matrix.yaml", text)
    with pytest.raises(MatrixError) as caught:
        parse_matrix(path)
    error = caught.value
    assert (error.path, error.line, error.field) == (path, line, field)
    assert says in str(error)
    where = f"{path} line {line}" + (f", field {field!r}" if field else "")
    assert str(error).startswith(where)


def test_the_message_reads_as_documented(tmp_path: Path) -> None:
    path = write(tmp_path / "matrix.yaml", "\n" * 13 + "- id: a\n  category: hate\n"
                 "  weight: huge\n  phrase: x\n")
    with pytest.raises(MatrixError, match=r"matrix.yaml line 16, field 'weight': 'huge' is "
                       "not light, medium or heavy"):
        parse_matrix(path)


def stack(tmp_path: Path) -> Paths:
    return Paths.for_stack("u1", {"HOME": str(tmp_path / "home"),
                                  "RUNA_SYSCONFDIR": str(tmp_path / "etc")})


def test_a_later_layer_replaces_a_motif_of_the_same_id_and_adds_its_own(tmp_path: Path) -> None:
    paths = stack(tmp_path)
    packaged = tmp_path / "pkg"
    write(packaged / "matrix.d/10.yaml", GOOD)
    write(tmp_path / "etc/policy/matrix.d/admin.yaml",
          "- id: ssn\n  category: privacy\n  weight: heavy\n  regex: 'x'\n")
    assert paths.user_config is not None
    write(paths.user_config / "policy/matrix.d/mine.yaml",
          "- id: mine\n  category: hate\n  weight: light\n  phrase: my word\n")
    matrix = MatrixLibrary(layers(paths, "matrix.d", packaged=packaged)).matrix()
    motifs = matrix.by_id()
    assert motifs["ssn"].weight.value == "heavy"
    assert motifs["ssn"].source == tmp_path / "etc/policy/matrix.d/admin.yaml"
    assert "mine" in motifs and "self-harm.end" in motifs
    assert matrix.problems == ()


def test_a_file_that_becomes_malformed_keeps_its_last_good_motifs_and_is_reported(
        tmp_path: Path) -> None:
    paths = stack(tmp_path)
    packaged = tmp_path / "pkg"
    admin = write(tmp_path / "etc/policy/matrix.d/admin.yaml", GOOD)
    library = MatrixLibrary(layers(paths, "matrix.d", packaged=packaged))
    assert "self-harm.end" in library.matrix().by_id()
    admin.write_text(GOOD.replace("weight: heavy", "weight: huge", 1))
    os.utime(admin, ns=(1, 1))  # a change the signature sees even within one mtime tick
    matrix = library.matrix()
    assert set(matrix.by_id()) == {"self-harm.end", "ssn", "kill.tokens", "hopeless"}
    assert matrix.by_id()["self-harm.end"].weight.value == "heavy"
    [problem] = matrix.problems
    assert (problem.path, problem.line, problem.field) == (admin, 3, "weight")
    admin.write_text(GOOD.replace("end my life", "end it all"))
    assert library.matrix().by_id()["self-harm.end"].pattern == "end it all"
    assert library.matrix().problems == ()


def test_a_malformed_file_with_no_good_past_adds_nothing_but_is_reported(tmp_path: Path) -> None:
    paths = stack(tmp_path)
    write(tmp_path / "etc/policy/matrix.d/bad.yaml",
          "- id: a\n  category: nope\n  weight: light\n  phrase: x\n")
    matrix = MatrixLibrary(layers(paths, "matrix.d", packaged=tmp_path / "pkg")).matrix()
    assert matrix.motifs == ()
    assert "bad.yaml line 2, field 'category'" in str(matrix.problems[0])


def test_the_packaged_matrix_reads_cleanly_and_covers_every_category() -> None:
    from runa.policy import CATEGORIES
    from runa.policy.files import PACKAGED

    motifs = [m for path in sorted((PACKAGED / "matrix.d").glob("*.yaml"))
              for m in parse_matrix(path)]
    assert {m.category for m in motifs} == set(CATEGORIES)
    assert {m.kind for m in motifs} >= {"phrase", "regex", "exemplar"}


def test_a_bare_no_in_the_matrix_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("- id: x\n  category: hate\n  weight: light\n  phrase: no\n")
    with pytest.raises(MatrixError, match="line 4, field 'phrase': 'no' reads as false in "
                       "YAML: put the text in quotes"):
        parse_matrix(path)
