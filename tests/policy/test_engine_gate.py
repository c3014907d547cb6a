"""splinfer's engine under the real tier-1 gate (runa.policy) and the tiny model's vocabulary:
a phrase of three model tokens is withdrawn before any of it is streamed, and the model state
holds what the person saw."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from runa.policy import Tier1, fingerprint_of
from runa.protocol.params import ContextParams, SamplingParams
from runa.splinfer.engine import Engine
from runa.splinfer.policy import VocabTokenizer
from runa.testing.tiny_gguf import write_tiny_gguf

from .streams import matrix_of, packaged_set

CONTEXT = ContextParams(ctx_size=512, batch_size=512, ubatch_size=512, threads=2,
                        flash_attn=False, cache_type_k="f32", cache_type_v="f32")
GREEDY = SamplingParams(temp=0.0, repeat_penalty=1.0, n_predict=40)
SEA = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf"), CONTEXT)
    engine.load()
    try:
        yield engine
    finally:
        engine.unload()


def three_token_word(engine: Engine, tokens: list[int]) -> tuple[int, str]:
    """Where the answer has a word (letters only) made of exactly three tokens, the first
    with its leading space, occurring there first; and the word."""
    pieces = [engine.vocab.piece(t) for t in tokens]
    for i in range(1, len(tokens) - 4):
        first, rest, after = pieces[i], pieces[i + 1:i + 3], pieces[i + 3]
        word = b"".join([first[1:], *rest]).decode("utf-8", "replace")
        if (first.startswith(b" ") and re.fullmatch(r"[a-z]{4,}", word)
                and all(re.fullmatch(rb"[a-z]+", p) for p in rest)
                and not re.match(rb"\w", after)
                and word not in engine.detokenize(tokens[:i])):
            return i, word
    raise AssertionError("no three-token word in the tiny model's answer")


def test_a_three_token_phrase_is_masked_before_any_of_it_is_streamed(engine: Engine,
                                                                      tmp_path: Path) -> None:
    prompt = engine.prompt(SEA, GREEDY).tokens
    base = engine.generate(engine.new_sequence(), prompt, GREEDY)
    i, word = three_token_word(engine, list(base.tokens))
    vocab = engine.vocab
    tokenizer = VocabTokenizer(lambda: engine.vocab,
                               fingerprint_of(vocab.piece(t) for t in range(vocab.n_tokens)))
    tier = Tier1(matrix_of(tmp_path, f"- id: w\n  category: privacy\n  weight: medium\n"
                           f"  phrase: {word}\n  replacement: '[masked]'\n"),
                 packaged_set("default"), tokenizer)
    gate = tier.gate("c1")
    streamed: list[str] = []
    seq = engine.new_sequence()
    result = engine.generate(seq, prompt, GREEDY, on_text=streamed.append, gate=gate)
    before = engine.detokenize(base.tokens[:i])
    text = "".join(streamed)
    assert text == result.text
    # the stream only grows: none of the word's three tokens ever reached the person
    assert text.startswith(before + " [masked]")
    assert word not in text
    [event] = [e for e in gate.interventions if e.action == "mask"][:1]
    assert (event.rule, event.token_index) == ("w", i)
    # the model state holds what the person saw: nothing withdrawn stays in the KV cache
    assert seq.tokens == [*prompt, *result.tokens[:-1]]
    assert llama_cpp.llama_memory_seq_pos_max(engine._memory(), seq.seq_id) + 1 == len(
        seq.tokens)
    assert list(result.tokens[:i]) == list(base.tokens[:i])
