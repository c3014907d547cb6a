"""The engine on the tiny synthetic model: identical to llama-cpp-python, and in control."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from runa.protocol.params import ContextParams, SamplingParams
from runa.splinfer import hooks
from runa.splinfer.engine import Engine
from runa.splinfer.errors import DecodeError, NotLoadedError
from runa.testing.tiny_gguf import FIRST_BYTE_ID

from .conftest import TINY_CONTEXT
from .direct import direct_chat, direct_turns

GREEDY = SamplingParams(temp=0.0, top_k=1, n_predict=48)
ASK = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write one sentence about the sea."},
]


@pytest.mark.parametrize("flash_attn", [True, False])
def test_greedy_output_is_identical_to_llama_cpp_python(tiny_model: Path, flash_attn: bool):
    engine = Engine(tiny_model, dataclasses.replace(TINY_CONTEXT, flash_attn=flash_attn))
    engine.load()
    try:
        for messages in (ASK, [{"role": "user", "content": "hello world, how are you?"}]):
            ours = engine.chat(engine.new_sequence(), messages, GREEDY)
            theirs = direct_chat(engine, messages, max_tokens=GREEDY.n_predict)
            assert list(ours.tokens) == theirs.tokens
            assert ours.text == theirs.text
            assert ours.n_prompt == theirs.prompt_tokens
            assert ours.n_gen == len(theirs.tokens) == GREEDY.n_predict
    finally:
        engine.unload()


def test_seeded_sampling_is_identical_to_llama_cpp_python(tiny_engine: Engine) -> None:
    sampling = SamplingParams(temp=0.9, top_k=40, top_p=0.95, min_p=0.05, seed=1234, n_predict=40)
    ours = tiny_engine.chat(tiny_engine.new_sequence(), ASK, sampling)
    theirs = direct_chat(
        tiny_engine, ASK, max_tokens=40,
        temperature=0.9, top_k=40, top_p=0.95, min_p=0.05, seed=1234,
    )  # fmt: skip
    assert list(ours.tokens) == theirs.tokens
    again = tiny_engine.chat(tiny_engine.new_sequence(), ASK, sampling)
    assert again.tokens == ours.tokens


def test_streamed_text_adds_up_to_the_answer(tiny_engine: Engine) -> None:
    pieces: list[str] = []
    result = tiny_engine.chat(tiny_engine.new_sequence(), ASK, GREEDY, on_text=pieces.append)
    assert len(pieces) > 10 and "".join(pieces) == result.text


def test_next_turn_evaluates_only_new_tokens(tiny_engine: Engine) -> None:
    seq = tiny_engine.new_sequence()
    first = tiny_engine.chat(seq, ASK, GREEDY)
    assert first.n_eval == first.n_prompt
    follow_up = [
        *ASK,
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And the sky?"},
    ]
    second = tiny_engine.chat(seq, follow_up, GREEDY)
    assert second.n_eval < second.n_prompt
    assert second.n_eval <= second.n_prompt - first.n_prompt + 1
    theirs = direct_turns(tiny_engine, [ASK, follow_up], max_tokens=GREEDY.n_predict)
    assert [list(first.tokens), list(second.tokens)] == [d.tokens for d in theirs]
    assert second.text == theirs[1].text


def test_same_prompt_twice_reuses_all_but_the_last_token(tiny_engine: Engine) -> None:
    seq = tiny_engine.new_sequence()
    a = tiny_engine.chat(seq, ASK, SamplingParams(temp=0, n_predict=0))
    b = tiny_engine.chat(seq, ASK, GREEDY)
    assert (a.n_gen, b.n_eval) == (0, 1)
    assert b.tokens == tiny_engine.chat(tiny_engine.new_sequence(), ASK, GREEDY).tokens


def test_n_predict_and_full_context_end_the_answer(tiny_engine: Engine) -> None:
    short = tiny_engine.chat(tiny_engine.new_sequence(), ASK, SamplingParams(temp=0, n_predict=5))
    assert (short.finish_reason, short.n_gen) == ("length", 5)
    prompt = tiny_engine.tokenize("the sea is big " * 200)[:490]
    full = tiny_engine.generate(
        tiny_engine.new_sequence(), prompt, SamplingParams(temp=0, n_predict=-1)
    )
    assert full.finish_reason == "context"
    assert full.n_prompt + full.n_gen == tiny_engine.n_ctx


def test_end_of_turn_token_stops_generation(tmp_path: Path) -> None:
    from runa.testing.tiny_gguf import IM_END_ID, write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "eager.gguf", boost_tokens=[IM_END_ID])
    engine = Engine(path, TINY_CONTEXT)
    engine.load()
    try:
        result = engine.chat(engine.new_sequence(), ASK, GREEDY)
        assert result.finish_reason == "stop" and IM_END_ID not in result.tokens
        assert result.n_gen < GREEDY.n_predict
        assert list(result.tokens) == direct_chat(engine, ASK, max_tokens=48).tokens
    finally:
        engine.unload()


def test_hook_sees_every_token_before_it_streams(tiny_engine: Engine) -> None:
    order: list[tuple[str, object]] = []

    def hook(token: int, piece: bytes) -> None:
        assert piece == tiny_engine.vocab.piece(token)
        order.append(("hook", token))

    result = tiny_engine.chat(
        tiny_engine.new_sequence(), ASK, GREEDY,
        on_token=hook, on_text=lambda s: order.append(("text", s)),
    )  # fmt: skip
    assert [t for kind, t in order if kind == "hook"] == list(result.tokens)
    assert order[0][0] == "hook"
    first_text = next(i for i, (kind, _) in enumerate(order) if kind == "text")
    assert order[first_text - 1][0] == "hook"


def test_hook_can_stop_the_answer(tiny_engine: Engine) -> None:
    seen: list[int] = []

    def hook(token: int, piece: bytes) -> hooks.TokenDecision:
        seen.append(token)
        return hooks.stop("word on the block list") if len(seen) == 5 else hooks.CONTINUE

    result = tiny_engine.chat(tiny_engine.new_sequence(), ASK, GREEDY, on_token=hook)
    assert (result.finish_reason, result.reason, result.n_gen) == (
        "policy", "word on the block list", 4
    )
    assert list(result.tokens) == seen[:4]


def test_hook_replacement_is_streamed_and_fed_back(tiny_engine: Engine) -> None:
    """Replace the 3rd token by the two byte tokens of 'é': streaming keeps it whole."""
    e_acute = [FIRST_BYTE_ID + b for b in "é".encode()]
    calls = 0

    def hook(token: int, piece: bytes) -> hooks.TokenDecision | None:
        nonlocal calls
        calls += 1
        return hooks.replace(e_acute, "accent") if calls == 3 else None

    pieces: list[str] = []
    result = tiny_engine.chat(
        tiny_engine.new_sequence(), ASK, GREEDY, on_token=hook, on_text=pieces.append
    )
    assert list(result.tokens[2:4]) == e_acute
    assert "é" in result.text and "\ufffd" not in result.text
    assert all("\ufffd" not in p for p in pieces) and "é" in pieces
    assert result.n_gen == GREEDY.n_predict
    # The model continued from the replacement: equal to a run that had it in the prompt.
    seq = tiny_engine.new_sequence()
    tiny_engine.chat(seq, ASK, SamplingParams(temp=0, n_predict=0))
    continued = tiny_engine.generate(
        seq, [*seq.tokens, *result.tokens[:4]], dataclasses.replace(GREEDY, n_predict=10)
    )
    assert continued.tokens == result.tokens[4:14]


def test_cancel_between_tokens(tiny_engine: Engine) -> None:
    cancel = threading.Event()
    pieces: list[str] = []

    def on_text(s: str) -> None:
        pieces.append(s)
        if len(pieces) == 3:
            cancel.set()

    seq = tiny_engine.new_sequence()
    result = tiny_engine.chat(seq, ASK, GREEDY, on_text=on_text, cancel=cancel)
    assert result.finish_reason == "cancelled" and 3 <= result.n_gen < GREEDY.n_predict
    again = tiny_engine.chat(seq, ASK, GREEDY)
    assert again.finish_reason == "length" and again.n_eval == 1


def test_progress_is_reported_from_inside_the_prompt_decode(tiny_model: Path) -> None:
    """One 450-token prompt is one llama_decode call: every report before the first
    token must come from llama.cpp's abort callback, i.e. from inside that call."""
    engine = Engine(tiny_model, TINY_CONTEXT, progress_interval=0.0)
    engine.load()
    try:
        events: list[str] = []
        prompt = engine.tokenize("the sea " * 225)[:450]
        engine.generate(
            engine.new_sequence(), prompt, SamplingParams(temp=0, n_predict=3),
            on_progress=lambda: events.append("progress"),
            on_token=lambda t, p: events.append("token"),
        )  # fmt: skip
        assert events.index("token") > 10
    finally:
        engine.unload()


def test_cancel_inside_a_long_prompt_decode_keeps_the_state_consistent(tiny_model: Path):
    context = dataclasses.replace(TINY_CONTEXT, ubatch_size=64)
    engine = Engine(tiny_model, context, progress_interval=0.0)
    engine.load()
    try:
        prompt = engine.tokenize("the sea is big " * 100)[:450]
        cancel = threading.Event()
        calls = 0

        def progress() -> None:
            nonlocal calls
            calls += 1
            if calls == 200:  # a few ubatches in
                cancel.set()

        seq = engine.new_sequence()
        result = engine.generate(
            seq, prompt, GREEDY, cancel=cancel, on_progress=progress
        )
        assert result.finish_reason == "cancelled" and result.n_gen == 0
        assert 0 <= result.n_eval < len(prompt)
        assert seq.n_past == result.n_eval and seq.tokens == prompt[: seq.n_past]
        resumed = engine.generate(seq, prompt, GREEDY)
        assert resumed.n_eval == len(prompt) - result.n_eval
        fresh = engine.generate(engine.new_sequence(), prompt, GREEDY)
        assert resumed.tokens == fresh.tokens
    finally:
        engine.unload()


def test_exception_in_progress_callback_surfaces_and_state_stays_usable(tiny_engine: Engine):
    def broken() -> None:
        raise RuntimeError("watchdog socket gone")

    seq = tiny_engine.new_sequence()
    with pytest.raises(RuntimeError, match="watchdog socket gone"):
        tiny_engine.chat(seq, ASK, GREEDY, on_progress=broken)
    assert tiny_engine.chat(seq, ASK, GREEDY).tokens == (
        tiny_engine.chat(tiny_engine.new_sequence(), ASK, GREEDY).tokens
    )


def test_unload_and_reload(tiny_engine: Engine) -> None:
    before = tiny_engine.chat(tiny_engine.new_sequence(), ASK, GREEDY)
    tiny_engine.unload()
    assert not tiny_engine.loaded
    with pytest.raises(NotLoadedError, match="not loaded"):
        tiny_engine.chat(tiny_engine.new_sequence(), ASK, GREEDY)
    tiny_engine.load()
    assert tiny_engine.loaded
    assert tiny_engine.chat(tiny_engine.new_sequence(), ASK, GREEDY).tokens == before.tokens


def test_saved_state_brings_a_conversation_back_without_reprocessing(tiny_engine: Engine):
    a = tiny_engine.new_sequence()
    first = tiny_engine.chat(a, ASK, GREEDY)
    state, tokens = tiny_engine.save_state(a), list(a.tokens)
    other = tiny_engine.new_sequence()
    tiny_engine.chat(other, [{"role": "user", "content": "something else"}], GREEDY)
    assert a.n_past == 0  # evicted by the other conversation
    tiny_engine.restore_state(a, state, tokens)
    follow_up = [*ASK, {"role": "assistant", "content": first.text},
                 {"role": "user", "content": "And the sky?"}]  # fmt: skip
    resumed = tiny_engine.chat(a, follow_up, GREEDY)
    assert resumed.n_eval <= resumed.n_prompt - first.n_prompt + 1
    # Exactly what the conversation would have said had it never left.
    b = tiny_engine.new_sequence()
    tiny_engine.chat(b, ASK, GREEDY)
    stayed = tiny_engine.chat(b, follow_up, GREEDY)
    assert (resumed.n_eval, resumed.tokens) == (stayed.n_eval, stayed.tokens)


def test_corrupt_state_is_refused_and_the_sequence_reprocesses(tiny_engine: Engine) -> None:
    a = tiny_engine.new_sequence()
    tiny_engine.chat(a, ASK, GREEDY)
    tokens = list(a.tokens)
    with pytest.raises(DecodeError, match="saved state"):
        tiny_engine.restore_state(a, b"\x00" * 64, tokens)
    assert a.n_past == 0
    again = tiny_engine.chat(a, ASK, GREEDY)
    assert again.n_eval == again.n_prompt


def test_threads_default_to_the_cpus_we_may_use(tiny_model: Path) -> None:
    engine = Engine(tiny_model, ContextParams(ctx_size=512), cpu_count=lambda: 3)
    assert engine.threads() == (3, 3)
    assert engine.llama_kwargs()["n_threads"] == 3
    engine = Engine(tiny_model, ContextParams(ctx_size=512, threads=2, threads_batch=4))
    assert engine.threads() == (2, 4)


def test_corrupt_model_never_reaches_llama_cpp(tiny_model: Path, tmp_path: Path) -> None:
    from runa.models.errors import CorruptModelError

    cut = tmp_path / "half.gguf"
    cut.write_bytes(tiny_model.read_bytes()[:300_000])
    with pytest.raises(CorruptModelError, match=r"half\.gguf"):
        Engine(cut, TINY_CONTEXT, llama_factory=lambda **kw: pytest.fail("llama.cpp called"))


def test_model_llama_cpp_refuses_is_named(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    from runa.splinfer.errors import ModelLoadError

    path = tmp_path / "alien.gguf"
    writer = gguf.GGUFWriter(str(path), "nosucharch")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(1)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "a"])
    writer.add_tensor("token_embd.weight", np.zeros((2, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    engine = Engine(path, TINY_CONTEXT)
    with pytest.raises(ModelLoadError, match=r"alien\.gguf: llama.cpp could not load"):
        engine.load()
    assert not engine.loaded
