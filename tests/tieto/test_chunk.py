"""Chunks fit the model (≤ 254 word-pieces by its own tokenizer), overlap, and map to the text."""

from __future__ import annotations

import itertools

import pytest

from runa.tieto.chunk import Chunker

from .conftest import DATA, sentences
from .fakes import FakeEmbedder

WORDS = FakeEmbedder().count_tokens


def _text(n_sentences: int) -> str:
    return " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(n_sentences))


def test_short_text_is_one_chunk() -> None:
    chunks = Chunker(WORDS, 50, 8).split("  Hello there.  \n")
    assert [(c.text, c.start, c.end, c.ordinal) for c in chunks] == [("Hello there.", 2, 14, 0)]


def test_blank_text_has_no_chunks() -> None:
    assert Chunker(WORDS, 50, 8).split(" \n\n \t") == []


def test_every_chunk_fits_and_is_a_slice_of_the_text() -> None:
    text = _text(200)
    chunks = Chunker(WORDS, 40, 10).split(text)
    assert len(chunks) > 10
    for chunk in chunks:
        assert WORDS(chunk.text) == chunk.n_tokens <= 40
        assert text[chunk.start : chunk.end] == chunk.text
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_consecutive_chunks_overlap_by_whole_sentences() -> None:
    chunks = Chunker(WORDS, 40, 10).split(_text(50))
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "no overlap"
        shared = a.text[b.start - a.start :]
        assert shared == b.text[: len(shared)] and WORDS(shared) <= 10
        assert shared.startswith("Sentence")


def test_without_overlap_chunks_tile_the_text() -> None:
    chunks = Chunker(WORDS, 40, 0).split(_text(50))
    for a, b in itertools.pairwise(chunks):
        assert a.end <= b.start


def test_a_long_sentence_is_cut_at_words_and_a_long_word_by_characters() -> None:
    blob = "x" * 30 + "-" * 100  # one 'word' of 101 pieces for the fake counter
    text = "word " * 100 + blob + " tail"
    chunks = Chunker(WORDS, 40, 5).split(text)
    assert all(WORDS(c.text) <= 40 for c in chunks)
    assert "".join(c.text for c in chunks if "-" in c.text).count("-") >= 100


@pytest.mark.parametrize(("max_tokens", "overlap"), [(4, 0), (40, 20), (40, -1)])
def test_bad_limits_are_refused(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        Chunker(WORDS, max_tokens, overlap)


@pytest.mark.slow
@pytest.mark.real_model
def test_real_tokenizer_chunks_fit_254_word_pieces(minilm) -> None:
    text = (DATA / "sentences.txt").read_text() * 6 + "\n".join(sentences())
    chunks = Chunker(minilm.count_tokens, 254, 32).split(text)
    assert len(chunks) >= 3
    for chunk in chunks:
        ids = minilm.tokenize(chunk.text, special=True)
        assert ids[0] == 101 and ids[-1] == 102 and len(ids) <= 256
        assert len(ids) - 2 == chunk.n_tokens
