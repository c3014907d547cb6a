"""Tier 1 against a real llama.cpp vocabulary: the synthetic test model's SentencePiece pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from runa.cli.policy_cmd import ModelTokenizer
from runa.policy import Tier1
from runa.testing.tiny_gguf import write_tiny_gguf

from .streams import matrix_of, packaged_set

STORMY = "- id: weather.stormy\n  category: privacy\n  weight: medium\n  phrase: stormy\n"


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> ModelTokenizer:
    return ModelTokenizer(write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf"))


def test_a_phrase_of_three_model_tokens_is_held_and_masked_before_any_is_streamed(
        tmp_path: Path, vocab: ModelTokenizer) -> None:
    tier = Tier1(matrix_of(tmp_path, STORMY), packaged_set("default"), vocab)
    answer = vocab.tokenize("the sky is stormy today")
    phrase = vocab.tokenize("stormy")
    assert [vocab.piece(t) for t in phrase] == [b" sto", b"rm", b"y"]  # three tokens
    assert b"".join(vocab.piece(t) for t in answer) == b" the sky is stormy today"
    gate = tier.gate()
    held: list[int] = []
    shown: list[int] = []
    for token in answer:
        held.append(token)
        step = gate.feed(token, vocab.piece(token))
        del held[len(held) - step.take_back:]
        shown += held[:step.release] + list(step.insert)
        del held[:step.release]
        assert not set(phrase) & set(shown[:len(shown) - len(step.insert)] if step.insert
                                     else shown)
    step = gate.finish()
    shown += held[:step.release]
    text = b"".join(vocab.piece(t) for t in shown).decode()
    assert text == " the sky is […] today"
    assert [e.token_index for e in gate.interventions] == [answer.index(phrase[0])]


def test_the_fingerprint_names_the_vocabulary(tmp_path: Path, vocab: ModelTokenizer) -> None:
    other = ModelTokenizer(write_tiny_gguf(tmp_path / "other.gguf", vocab_size=900))
    assert vocab.fingerprint.startswith("sha256:")
    assert vocab.fingerprint != other.fingerprint


def test_a_tokens_motif_bound_to_another_model_is_rebuilt_for_this_one(
        tmp_path: Path, vocab: ModelTokenizer) -> None:
    text = ("- id: kill.stormy\n  category: violent_crimes\n  weight: heavy\n"
            "  tokens: {tokenizer: 'sha256:0', ids: [7, 8, 9], phrase: stormy}\n")
    tier = Tier1(matrix_of(tmp_path, text), packaged_set("default"), vocab)
    assert tier.problems == ()
    gate = tier.gate()
    steps = [gate.feed(t, vocab.piece(t)) for t in vocab.tokenize("the sky is stormy")]
    assert steps[-1].stop and gate.interventions[0].rule == "kill.stormy"
