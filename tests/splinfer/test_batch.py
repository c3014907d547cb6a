"""Several sequences in one context, decoded together: each as if it were alone.

Flash attention off and an f32 KV cache: a row computed in a batch of another
shape differs in the last bits (~5e-7: ggml rounds differently for 1 and N rows);
an f16 cache turns that into f16 steps (~1e-3) now and then, which the random
tiny model amplifies into other tokens after a few dozen. In f32 the difference
stays ~1e-6 and the answers are token for token the same alone and together.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from runa.protocol.params import SamplingParams
from runa.splinfer.engine import Engine
from runa.splinfer.errors import NoFreeSequenceError
from runa.splinfer.sequence import Sequence

from .conftest import TINY_CONTEXT

PARALLEL = dataclasses.replace(TINY_CONTEXT, ctx_size=2048, parallel=4, cache_type_k="f32",
                               cache_type_v="f32")
# Four "personas": other system prompts and other sampling, seeded so each is repeatable.
TALKS = [
    ([{"role": "system", "content": "You are calm."},
      {"role": "user", "content": "hello how are you"}],
     SamplingParams(temp=0.0, n_predict=120)),
    ([{"role": "system", "content": "You are brief and you like the sea."},
      {"role": "user", "content": "tell me about the sea and the sky"}],
     SamplingParams(temp=0.8, top_k=40, top_p=0.9, seed=7, n_predict=120)),
    ([{"role": "user", "content": "what is a star"}],
     SamplingParams(temp=1.2, seed=99, repeat_penalty=1.2, n_predict=120)),
    ([{"role": "system", "content": "You teach small children, one word at a time."},
      {"role": "user", "content": "why is the water big and the stone small"}],
     SamplingParams(temp=0.7, mirostat=2, mirostat_ent=4.0, seed=3, n_predict=120)),
]  # fmt: skip


@pytest.fixture
def engine(tiny_model: Path):
    engine = Engine(tiny_model, PARALLEL, progress_interval=0.0)
    engine.load()
    yield engine
    engine.unload()


def alone(engine: Engine, messages, sampling) -> tuple[int, ...]:
    seq = engine.new_sequence()
    try:
        return engine.chat(seq, messages, sampling).tokens
    finally:
        engine.release(seq)


def test_four_conversations_together_say_exactly_what_they_say_alone(engine: Engine) -> None:
    solo = [alone(engine, messages, sampling) for messages, sampling in TALKS]
    assert len(set(solo)) == 4  # four different answers, so a mix-up would show
    seqs = [engine.new_sequence(f"c{i}") for i in range(4)]
    texts: list[list[str]] = [[] for _ in TALKS]
    gens = []
    steps = 0
    # Staggered: two start, a few tokens later the other two join the running batch.
    for i, (messages, sampling) in enumerate(TALKS):
        gens.append(engine.start(seqs[i], engine.prompt(messages, sampling).tokens, sampling,
                                 on_text=texts[i].append))
        if i == 1:
            for _ in range(5):
                engine.step(gens)
                steps += 1
    while not all(g.done for g in gens):
        engine.step(gens)
        steps += 1
    assert [g.result.tokens for g in gens] == solo
    assert all("".join(t) == g.result.text for t, g in zip(texts, gens, strict=True))
    assert steps < sum(len(s) for s in solo)  # decoded together, not one after another
    assert {s.seq_id for s in seqs} == {0, 1, 2, 3}


def test_cancelling_one_leaves_the_others_untouched(engine: Engine) -> None:
    solo = [alone(engine, messages, sampling) for messages, sampling in TALKS[:3]]
    stop = [False, False, False]
    gens = [engine.start(engine.new_sequence(), engine.prompt(m, s).tokens, s,
                         cancel=lambda i=i: stop[i])
            for i, (m, s) in enumerate(TALKS[:3])]  # fmt: skip
    for _ in range(6):
        engine.step(gens)
    stop[1] = True
    while not all(g.done for g in gens):
        engine.step(gens)
    assert gens[1].result.finish_reason == "cancelled" and gens[1].result.n_gen < 10
    assert [gens[0].result.tokens, gens[2].result.tokens] == [solo[0], solo[2]]


def test_a_prompt_arriving_mid_answer_is_read_in_chunks(tiny_model: Path) -> None:
    engine = Engine(tiny_model, PARALLEL, interleave_chunk=32)
    engine.load()
    try:
        short = engine.start(engine.new_sequence(), engine.tokenize("hello"),
                             SamplingParams(temp=0, n_predict=60))
        engine.step([short])
        long_prompt = engine.tokenize("the sea is big " * 60)[:200]
        late = engine.start(engine.new_sequence(), long_prompt, SamplingParams(temp=0, n_predict=3))
        produced = []
        while not late.done:
            engine.step([short, late])
            produced.append(len(short.out))
        # The running answer kept producing a token per step while the prompt was read.
        assert produced[: 200 // 32] == list(range(2, 2 + 200 // 32))
        alone_late = engine.generate(engine.new_sequence(), long_prompt,
                                     SamplingParams(temp=0, n_predict=3))
        assert late.result.tokens == alone_late.tokens
    finally:
        engine.unload()


def test_the_least_recently_used_idle_sequence_is_evicted_and_saved_first(tiny_model: Path):
    evicted: list[tuple[str, int]] = []
    engine = Engine(tiny_model, dataclasses.replace(TINY_CONTEXT, parallel=2),
                    on_evict=lambda seq: evicted.append((seq.owner, seq.n_past)))
    engine.load()
    try:
        greedy = SamplingParams(temp=0, n_predict=4)
        a, b, c = (engine.new_sequence(x) for x in "abc")
        engine.generate(a, engine.tokenize("hello"), greedy)
        engine.generate(b, engine.tokenize("world"), greedy)
        engine.generate(a, [*a.tokens, *engine.tokenize("again")], greedy)  # a is newer now
        n_b = b.n_past
        engine.generate(c, engine.tokenize("sea"), greedy)
        assert evicted == [("b", n_b)]
        assert (a.resident, b.resident, c.resident) == (True, False, True)
        assert b.tokens == []
    finally:
        engine.unload()
    assert {owner for owner, _ in evicted} == {"a", "b", "c"}  # unload lets every one leave


def test_no_free_sequence_while_every_slot_answers(tiny_model: Path) -> None:
    engine = Engine(tiny_model, dataclasses.replace(TINY_CONTEXT, parallel=2))
    engine.load()
    try:
        sampling = SamplingParams(temp=0, n_predict=5)
        running = [engine.start(engine.new_sequence(), engine.tokenize(w), sampling)
                   for w in ("one", "two")]
        extra = engine.new_sequence()
        assert not engine.can_claim(extra)
        with pytest.raises(NoFreeSequenceError, match="all 2 sequences"):
            engine.start(extra, engine.tokenize("three"), sampling)
        while not all(g.done for g in running):
            engine.step(running)
        assert engine.generate(extra, engine.tokenize("three"), sampling).n_gen == 5
    finally:
        engine.unload()


def test_a_full_context_ends_the_answers_that_do_not_fit(tiny_model: Path) -> None:
    engine = Engine(tiny_model, dataclasses.replace(TINY_CONTEXT, parallel=2))
    engine.load()
    try:
        words = engine.tokenize("the sea is big " * 100)
        endless = SamplingParams(temp=0, n_predict=-1)
        gens = [engine.start(engine.new_sequence(), words[:200], endless),
                engine.start(engine.new_sequence(), words[200:400], endless)]
        while not all(g.done for g in gens):
            engine.step(gens)
        assert {g.result.finish_reason for g in gens} == {"context"}
        assert sum(g.seq.n_past for g in gens) <= engine.n_ctx
        assert engine.free_cells() >= 0
    finally:
        engine.unload()


def test_restored_state_needs_only_the_new_tokens_in_a_busy_context(engine: Engine) -> None:
    messages, sampling = TALKS[0]
    seq = engine.new_sequence("a")
    engine.chat(seq, messages, sampling)
    state, tokens = bytes(engine.save_state(seq)), list(seq.tokens)
    engine.release(seq)
    others = [engine.new_sequence() for _ in range(4)]
    for other, (m, s) in zip(others, TALKS, strict=True):
        engine.chat(other, m, s)  # fill every slot
    engine.restore_state(seq, state, tokens)
    assert seq.resident and seq.tokens == tokens
    assert sum(not o.resident for o in others) == 1  # one was evicted to make room
    again = engine.generate(seq, [*tokens, *engine.tokenize("and the sky")], sampling)
    assert again.n_eval == len(engine.tokenize("and the sky"))
    stayed = engine.new_sequence()
    engine.generate(stayed, tokens, SamplingParams(temp=0, n_predict=0))
    fresh = engine.generate(stayed, [*tokens, *engine.tokenize("and the sky")], sampling)
    assert again.tokens == fresh.tokens


def test_sequences_start_without_a_slot() -> None:
    seq = Sequence()
    assert not seq.resident and seq.n_past == 0
