"""The engine under a stream gate (tier 1 of the policy): held, withdrawn, replaced tokens.

The gates here are written for the tests (runa.policy builds the real one); they watch for a
three-token run from the middle of the tiny model's greedy answer. An f32 KV cache, as in
test_batch.py, so a sequence resumed after a take-back and a fresh one computing the same
positions in other batch shapes agree token for token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from pathlib import Path

import llama_cpp
import pytest

from runa.policy.stream import HOLD, RELEASE_ONE, GateStep, StreamGate
from runa.protocol.params import SamplingParams
from runa.splinfer import hooks
from runa.splinfer.engine import Engine
from runa.splinfer.generation import GenerationResult
from runa.splinfer.sequence import Sequence

from .conftest import TINY_CONTEXT

CONTEXT = dataclasses.replace(TINY_CONTEXT, parallel=2, cache_type_k="f32", cache_type_v="f32")
GREEDY = SamplingParams(temp=0.0, repeat_penalty=1.0, n_predict=40)
SEA = [{"role": "user", "content": "Write one sentence about the sea."}]
HELLO = [{"role": "user", "content": "hello how are you"}]


@pytest.fixture
def engine(tiny_model: Path) -> Iterator[Engine]:
    engine = Engine(tiny_model, CONTEXT)
    engine.load()
    try:
        yield engine
    finally:
        engine.unload()


class MotifGate:
    """Holds tokens while they could start ``motif``; on the whole motif, masks it once."""

    def __init__(self, motif: Seq[int], insert: Seq[int], *, stop: bool = False,
                 streamed: list[str] | None = None) -> None:
        self.motif = tuple(motif)
        self.insert = tuple(insert)
        self.stop = stop
        self.held: list[int] = []
        self.masked = False
        self.streamed = streamed
        self.seen_at_match: str | None = None
        """What had been streamed when the motif's last token arrived."""
        self.finished = 0

    def feed(self, token: int, piece: bytes) -> GateStep:
        self.held.append(token)
        if self.masked:
            return self._release(len(self.held))
        if tuple(self.held[-len(self.motif):]) == self.motif:
            self.masked = True
            if self.streamed is not None:
                self.seen_at_match = "".join(self.streamed)
            before = len(self.held) - len(self.motif)
            self.held = []
            return GateStep(release=before, take_back=len(self.motif), insert=self.insert,
                            stop=self.stop, reason="motif" if self.stop else "")
        partial = max((n for n in range(len(self.motif))
                       if n == 0 or tuple(self.held[-n:]) == self.motif[:n]), default=0)
        return self._release(len(self.held) - partial)

    def _release(self, n: int) -> GateStep:
        del self.held[:n]
        return GateStep(release=n)

    def finish(self) -> GateStep:
        self.finished += 1
        return self._release(len(self.held))


def kv_positions(engine: Engine, seq: Sequence) -> int:
    """How many positions the context holds for ``seq`` (llama.cpp's view, not ours)."""
    return llama_cpp.llama_memory_seq_pos_max(engine._memory(), seq.seq_id) + 1


def answer(engine: Engine, prompt: list[int], sampling: SamplingParams = GREEDY, *,
           gate: StreamGate | None = None, streamed: list[str] | None = None,
           ) -> tuple[GenerationResult, Sequence, str]:
    """One answer on a new sequence: the result, the sequence, the text streamed."""
    seq = engine.new_sequence()
    chunks = [] if streamed is None else streamed
    result = engine.generate(seq, prompt, sampling, on_text=chunks.append, gate=gate)
    return result, seq, "".join(chunks)


def mid_motif(tokens: Seq[int]) -> int:
    """Where a three-token run starts that first occurs there, in the middle of the answer."""
    for i in range(len(tokens) // 3, len(tokens) - 10):
        run = tuple(tokens[i : i + 3])
        if all(tuple(tokens[j : j + 3]) != run for j in range(i)):
            return i
    raise AssertionError("no fresh three-token run in the answer")


def test_a_three_token_motif_is_masked_before_any_of_it_is_streamed(engine: Engine) -> None:
    prompt = engine.prompt(SEA, GREEDY).tokens
    base, _, _ = answer(engine, prompt)
    i = mid_motif(base.tokens)
    motif, replacement = base.tokens[i : i + 3], engine.tokenize("[masked]")
    before = engine.detokenize(base.tokens[:i])

    streamed: list[str] = []
    gate = MotifGate(motif, replacement, streamed=streamed)
    masked, seq, text = answer(engine, prompt, gate=gate, streamed=streamed)

    assert gate.seen_at_match == before  # none of the motif had reached the person
    assert text == masked.text == engine.detokenize(masked.tokens)
    # the stream only grows, so the motif's text never reached the person
    assert text.startswith(before + engine.detokenize(replacement))
    assert engine.detokenize(motif) not in text
    assert list(masked.tokens[: i + len(replacement)]) == [*base.tokens[:i], *replacement]
    assert masked.finish_reason == "length" and gate.finished == 1
    # The model state holds what the person saw: prompt, answer (its last token, at the
    # limit, not evaluated), nothing withdrawn.
    assert seq.tokens == [*prompt, *masked.tokens[:-1]]
    assert kv_positions(engine, seq) == len(seq.tokens)
    # ... and the model went on from there: as a fresh sequence reading that as its prompt.
    shown = [*prompt, *base.tokens[:i], *replacement]
    after = list(masked.tokens[i + len(replacement) :])
    fresh, _, _ = answer(engine, shown, dataclasses.replace(GREEDY, n_predict=len(after)))
    assert len(after) >= 10 and list(fresh.tokens) == after
    # The next turn reuses that state and answers as a fresh sequence does.
    follow_up = [*prompt, *masked.tokens, *engine.tokenize("<|im_end|>\n", special=True)]
    second = engine.generate(seq, follow_up, GREEDY)
    assert second.n_eval <= 4
    assert second.tokens == answer(engine, follow_up)[0].tokens


def test_a_block_withdraws_the_motif_and_ends_with_the_refusal(engine: Engine) -> None:
    prompt = engine.prompt(SEA, GREEDY).tokens
    base, _, _ = answer(engine, prompt)
    i = mid_motif(base.tokens)
    refusal = engine.tokenize(" I can't help with that.")
    before = engine.detokenize(base.tokens[:i])
    streamed: list[str] = []
    gate = MotifGate(base.tokens[i : i + 3], refusal, stop=True, streamed=streamed)

    blocked, seq, text = answer(engine, prompt, gate=gate, streamed=streamed)

    assert (blocked.finish_reason, blocked.reason) == ("policy", "motif")
    assert gate.seen_at_match == before
    assert text == blocked.text == before + engine.detokenize(refusal)
    assert list(blocked.tokens) == [*base.tokens[:i], *refusal]
    assert gate.finished == 0  # the gate ended the answer itself
    # The refusal is shown but not evaluated; the withdrawn tokens are gone from the cache.
    assert seq.tokens == [*prompt, *base.tokens[:i]]
    assert kv_positions(engine, seq) == len(seq.tokens)


@pytest.mark.parametrize("at_finish", ["release_all", "hold"])
def test_tokens_held_to_the_end_of_the_answer_are_all_released(engine: Engine,
                                                              at_finish: str) -> None:
    prompt = engine.prompt(SEA, GREEDY).tokens
    base, _, base_text = answer(engine, prompt)
    streamed: list[str] = []
    fed: list[int] = []

    class HoldAll:
        def feed(self, token: int, piece: bytes) -> GateStep:
            assert not streamed  # nothing reaches the person while held
            fed.append(token)
            return HOLD

        def finish(self) -> GateStep:
            # the engine releases what a finishing gate leaves held
            return GateStep(release=len(fed)) if at_finish == "release_all" else HOLD

    held, seq, text = answer(engine, prompt, gate=HoldAll(), streamed=streamed)

    assert held.tokens == base.tokens and fed == list(base.tokens)
    assert text == held.text == base.text == base_text
    assert seq.tokens == [*prompt, *held.tokens[:-1]]


def test_a_block_found_when_the_answer_ends_is_a_policy_ending(engine: Engine) -> None:
    prompt = engine.prompt(SEA, GREEDY).tokens
    base = answer(engine, prompt)[0]
    refusal = engine.tokenize(" No.")[:3]  # fits the room the withdrawn tokens leave
    fed: list[int] = []

    class BlockAtEnd:
        """Holds the last three tokens; at the end they turn out to be a blocked match."""

        def feed(self, token: int, piece: bytes) -> GateStep:
            fed.append(token)
            return GateStep(release=1) if len(fed) > 3 else HOLD

        def finish(self) -> GateStep:
            return GateStep(take_back=3, insert=tuple(refusal), stop=True, reason="motif")

    blocked, _, text = answer(engine, prompt, gate=BlockAtEnd())

    assert base.finish_reason in ("stop", "length")
    assert (blocked.finish_reason, blocked.reason) == ("policy", "motif")
    kept = base.tokens[: len(base.tokens) - 3]
    assert list(blocked.tokens) == [*kept, *refusal]
    assert text == blocked.text == engine.detokenize(kept) + engine.detokenize(refusal)


def test_a_cancelled_answer_shows_what_was_held(engine: Engine) -> None:
    prompt = engine.prompt(SEA, GREEDY).tokens
    base = answer(engine, prompt)[0]
    fed: list[int] = []

    class HoldAll:
        def feed(self, token: int, piece: bytes) -> GateStep:
            fed.append(token)
            return HOLD

        def finish(self) -> GateStep:
            return GateStep(release=len(fed))

    seq = engine.new_sequence()
    result = engine.generate(seq, prompt, GREEDY, gate=HoldAll(), cancel=lambda: len(fed) >= 7)
    assert result.finish_reason == "cancelled"
    assert result.tokens == base.tokens[:7] and result.text == engine.detokenize(fed)
    assert seq.tokens == [*prompt, *result.tokens[:-1]]


def test_the_gate_sees_what_the_token_hook_let_through(engine: Engine) -> None:
    prompt = engine.prompt(SEA, GREEDY).tokens
    base = answer(engine, prompt)[0]
    star = engine.tokenize("*")[-1]
    order: list[tuple[str, int]] = []

    def hook(token: int, piece: bytes) -> hooks.TokenDecision | None:
        order.append(("hook", token))
        return hooks.replace([star]) if len(order) == 3 else None  # the second token

    class Spy:
        def feed(self, token: int, piece: bytes) -> GateStep:
            order.append(("gate", token))
            return RELEASE_ONE

        def finish(self) -> GateStep:
            return HOLD

    result = engine.generate(engine.new_sequence(), prompt,
                             dataclasses.replace(GREEDY, n_predict=3), on_token=hook, gate=Spy())
    assert order[:4] == [("hook", base.tokens[0]), ("gate", base.tokens[0]),
                         ("hook", base.tokens[1]), ("gate", star)]
    assert result.tokens[:2] == (base.tokens[0], star)


def test_a_gate_that_releases_every_token_changes_nothing(engine: Engine) -> None:
    for messages in (SEA, HELLO):
        prompt = engine.prompt(messages, GREEDY).tokens
        base, _, base_text = answer(engine, prompt)
        streamed: list[str] = []
        alone: list[str] = []
        released, _, text = answer(engine, prompt, gate=_Always(RELEASE_ONE),
                                     streamed=streamed)
        answer(engine, prompt, streamed=alone)
        assert released == dataclasses.replace(base, prompt_seconds=released.prompt_seconds,
                                               gen_seconds=released.gen_seconds)
        assert streamed == alone and text == base_text


def test_a_take_back_without_replacement_cannot_run_forever(engine: Engine) -> None:
    prompt = engine.prompt(SEA, GREEDY).tokens
    withdrawn, seq, text = answer(engine, prompt, gate=_Always(GateStep(take_back=1)))
    # greedy samples the same token again and again; the limit counts every one
    assert (withdrawn.finish_reason, withdrawn.tokens, text) == ("length", (), "")
    assert seq.tokens == prompt  # the last prompt token, evaluated again for each sample
    assert kv_positions(engine, seq) == len(seq.tokens)


def test_a_mask_in_one_answer_leaves_the_answer_beside_it_alone(engine: Engine) -> None:
    sea, hello = (engine.prompt(m, GREEDY).tokens for m in (SEA, HELLO))
    sea_alone, hello_alone = answer(engine, sea)[0], answer(engine, hello)[0]
    i = mid_motif(sea_alone.tokens)
    replacement = engine.tokenize("[masked]")
    sea_masked_alone = answer(engine, sea,
                              gate=MotifGate(sea_alone.tokens[i : i + 3], replacement))[0]

    a, b = engine.new_sequence(), engine.new_sequence()
    masked = engine.start(a, sea, GREEDY, gate=MotifGate(sea_alone.tokens[i : i + 3],
                                                         replacement))
    plain = engine.start(b, hello, GREEDY, gate=_Always(RELEASE_ONE))
    while not (masked.done and plain.done):
        engine.step([masked, plain])
    assert masked.result is not None and plain.result is not None

    assert plain.result.tokens == hello_alone.tokens
    assert masked.result.tokens == sea_masked_alone.tokens
    assert list(masked.result.tokens[i : i + len(replacement)]) == replacement
    for seq in (a, b):
        assert kv_positions(engine, seq) == len(seq.tokens)
    assert b.tokens == [*hello, *plain.result.tokens[:-1]]
    assert a.tokens == [*sea, *masked.result.tokens[:-1]]


class _Always:
    """A gate answering every token with the same step."""

    def __init__(self, step: GateStep) -> None:
        self.step = step

    def feed(self, token: int, piece: bytes) -> GateStep:
        return self.step

    def finish(self) -> GateStep:
        return HOLD
