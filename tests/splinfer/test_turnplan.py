"""A conversation's next prompt extends the tokens it already has: only the new turn is read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from runa.protocol.params import SamplingParams
from runa.splinfer.engine import Engine
from runa.splinfer.prompt import answer_reserve
from runa.splinfer.turnplan import next_basis, plan_turn

from .conftest import TINY_CONTEXT

SAMPLING = SamplingParams(temp=0.0, n_predict=24)
SYSTEM = ({"role": "system", "content": "You are calm."},)
MODEL = "tiny"


class Talk:
    """A conversation driven the way the daemon drives one."""

    def __init__(self, engine: Engine, system=SYSTEM) -> None:
        self.engine = engine
        self.system = system
        self.history: list[dict[str, str]] = []
        self.window = 0
        self.basis = None
        self.seq = engine.new_sequence("talk")

    def turn(self, text: str, sampling: SamplingParams = SAMPLING):
        user = {"role": "user", "content": text}
        plan = plan_turn(self.engine.builder, system=self.system, history=self.history,
                         window=self.window, user=user, basis=self.basis, model=MODEL,
                         n_ctx=self.engine.n_ctx,
                         reserve=answer_reserve(sampling.n_predict, self.engine.n_ctx))
        result = self.engine.generate(self.seq, plan.tokens, sampling)
        self.history += [user, {"role": "assistant", "content": result.text}]
        self.window = plan.window
        self.basis = next_basis(self.engine.builder, system=self.system, history=self.history,
                                window=plan.window, prompt=plan.tokens, answer=result.tokens,
                                model=MODEL)
        return plan, result


def test_each_returning_turn_evaluates_only_its_own_tokens(tiny_engine: Engine) -> None:
    talk = Talk(tiny_engine)
    plan, first = talk.turn("hello there how are you")
    assert first.n_eval == first.n_prompt and not plan.incremental
    for text in ("and the sea", "what about the sky", "thanks"):
        before = len(talk.basis.tokens)
        plan, result = talk.turn(text)
        new_tokens = len(plan.tokens) - before
        assert plan.incremental
        assert new_tokens <= result.n_eval <= new_tokens + 1


def test_the_answer_is_not_re_read_even_when_its_text_tokenizes_differently(
        tiny_engine: Engine) -> None:
    talk = Talk(tiny_engine)
    talk.turn("hello there how are you")
    before = talk.basis.tokens
    user = {"role": "user", "content": "and the sea"}
    whole = tiny_engine.builder.tokens([*SYSTEM, *talk.history, user])
    differs = next(i for i, (a, b) in enumerate(zip(whole, before, strict=False)) if a != b)
    # Re-tokenizing the text would part from the model's own tokens inside its answer …
    assert differs < len(before)
    plan, result = talk.turn("and the sea")
    # … while the plan keeps them, so only the new turn is evaluated.
    assert plan.incremental and tuple(plan.tokens[: len(before)]) == before
    assert result.n_eval <= len(plan.tokens) - len(before) + 1


def test_a_changed_system_prompt_rebuilds_the_prompt(tiny_engine: Engine) -> None:
    talk = Talk(tiny_engine)
    talk.turn("hello there")
    talk.system = ({"role": "system", "content": "You are a pirate now."},)
    plan, result = talk.turn("and the sea")
    assert not plan.incremental
    assert plan.tokens == tiny_engine.builder.tokens([*talk.system, *talk.history[:-1]])
    assert result.n_eval > 20  # from the system prompt on, everything is read again


def test_outgrowing_the_context_drops_to_half_then_extends_again(tiny_model: Path) -> None:
    engine = Engine(tiny_model, dataclasses.replace(TINY_CONTEXT, ctx_size=512))
    engine.load()
    try:
        talk = Talk(engine)
        long = "the sea and the sky and the stone and the river " * 4
        plans = [talk.turn(long)[0] for _ in range(12)]
        dropped_at = next(i for i, p in enumerate(plans) if p.window > 0)
        shrunk = plans[dropped_at]
        assert not shrunk.incremental and len(shrunk.tokens) <= 512 // 2
        assert plans[dropped_at + 1].incremental  # room again for whole turns
        assert plans[dropped_at + 1].window == shrunk.window
    finally:
        engine.unload()
