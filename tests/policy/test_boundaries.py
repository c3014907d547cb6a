"""Tier 1 where text is not one word per token: runs of spaces and punctuation, text after a
mask in the same token, characters split over several byte tokens."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from runa.policy import Action, Matrix, Tier1, parse_matrix
from runa.policy.files import PACKAGED

from .streams import WordTokenizer, matrix_of, packaged_set, run, tier

ADDRESS = """\
- id: privacy.home-address
  category: privacy
  weight: medium
  phrase: home address
"""


@pytest.mark.parametrize(("text", "masked"), [
    ("find their home  address now", "find their […] now"),
    ("find their **home** address now", "find their **[…] now"),
    ("find their home,\naddress now", "find their […] now"),
    ("find their home - - address", "find their […]"),
])
def test_a_run_of_spaces_or_punctuation_is_one_boundary_in_check(
        tmp_path: Path, text: str, masked: str) -> None:
    gate_of, _ = tier(tmp_path, ADDRESS)
    verdict = gate_of.check(text, "output")
    assert (verdict.action, verdict.text) == (Action.MASK, masked)


def test_kill_someone_with_markup_is_caught_under_child_safe(tmp_path: Path) -> None:
    gate_of, _ = tier(tmp_path, "- id: k\n  category: violent_crimes\n  weight: heavy\n"
                      "  phrase: kill someone\n", policy="child-safe")
    for text in ("kill  someone", "**kill** someone", "kill,\nsomeone"):
        assert gate_of.check(text).action is Action.BLOCK, text


@pytest.mark.parametrize(("pieces", "shown"), [
    (["Find", " their", "  home", "  ", "address", " now", "."], "Find their  […] now."),
    (["Find", " their", " **", "home", "**", " address", "."], "Find their **[…]."),
    (["Find", " their", " home", ",\n", "address", " now"], "Find their […] now"),
])
def test_a_run_of_spaces_or_punctuation_is_one_boundary_in_the_stream(
        tmp_path: Path, pieces: list[str], shown: str) -> None:
    gate_of, tok = tier(tmp_path, ADDRESS)
    gate = gate_of.gate()
    stream = run(gate, tok, pieces)
    assert tok.text(stream.shown) == shown
    assert stream.model == stream.shown
    assert [e.action for e in gate.interventions] == ["mask"]


def test_text_after_a_mask_in_the_same_token_is_checked_too(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, ADDRESS)
    gate = gate_of.gate()
    stream = run(gate, tok, ["my", " home", " address", ".home", " address", " is", " near"])
    assert tok.text(stream.shown) == "my […].[…] is near"
    assert [e.action for e in gate.interventions] == ["mask", "mask"]
    assert "home" not in "".join(tok.texts[t] for t in stream.shown)


class ByteTokenizer:
    """Pieces given as bytes (a byte-level tokenizer may split a character); inserted text
    is tokenized a word at a time."""

    fingerprint = "test:bytes"

    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}
        self.pieces: dict[int, bytes] = {}

    def id_of(self, piece: bytes | str) -> int:
        data = piece.encode() if isinstance(piece, str) else piece
        if data not in self.ids:
            self.ids[data] = len(self.ids) + 10
            self.pieces[self.ids[data]] = data
        return self.ids[data]

    def tokenize(self, text: str) -> list[int]:
        return [self.id_of(p) for p in re.findall(r" ?\w+| ?[^\w ]| +", text)]

    def piece(self, token: int) -> bytes:
        return self.pieces[token]

    def text(self, tokens: Sequence[int]) -> str:
        return b"".join(self.pieces[t] for t in tokens).decode("utf-8", "replace")


def test_a_motif_starting_with_a_split_character_holds_all_its_bytes(tmp_path: Path) -> None:
    tok = ByteTokenizer()
    gate_of = Tier1(matrix_of(tmp_path, "- id: kill.zh\n  category: privacy\n  weight: medium\n"
                              "  phrase: 杀\n"), packaged_set("default"), tok)
    gate = gate_of.gate()
    pieces = [b"ok", b" \xe6", b"\x9d", b"\x80", b" now"]  # 杀 is e6 9d 80
    stream = run(gate, tok, pieces)  # type: ignore[arg-type]
    assert tok.text(stream.shown) == "ok […] now"
    assert stream.shown_after[:4] == [1, 1, 1, 1]  # no byte of 杀 ever reached the person
    assert stream.model == stream.shown
    [event] = gate.interventions
    assert event.token_index == 1  # the token holding the character's first byte


def test_the_packaged_kill_switch_shows_no_word_of_it_before_the_refusal() -> None:
    tok = WordTokenizer()
    matrix = Matrix(tuple(parse_matrix(PACKAGED / "matrix.d/10-packaged.yaml")))
    gate = Tier1(matrix, packaged_set("child-safe"), tok).gate()
    stream = run(gate, tok, ["Here", " is", " child", " porn", "ography", " for", " you"])
    assert stream.stopped and "child" not in tok.text(stream.shown)
    assert stream.shown_after[:3] == [1, 2, 2]
    assert [e.action for e in gate.interventions] == ["block"]
