"""Streaming text never shows half a character."""

from __future__ import annotations

from runa.splinfer.text import Utf8Stream


def test_character_split_over_pieces_comes_out_whole() -> None:
    stream = Utf8Stream()
    data = "café 🌊".encode()
    out = [stream.feed(data[i : i + 1]) for i in range(len(data))]
    assert "".join(out) + stream.flush() == "café 🌊"
    assert "\ufffd" not in "".join(out)
    assert out[3] == "" and out[4] == "é"  # the first byte of é is held back


def test_bytes_that_cannot_be_utf8_become_replacement_characters() -> None:
    stream = Utf8Stream()
    assert stream.feed(b"a\xffb") == "a\ufffdb"
    assert stream.feed(b"\xe2\x82") == ""
    assert stream.flush() == "\ufffd"  # an unfinished character at the end
