"""The synthetic test model itself: deterministic, and a usable chat model for llama.cpp."""

from __future__ import annotations

from pathlib import Path

from runa.splinfer.engine import Engine
from runa.testing.tiny_gguf import IM_START_ID, write_tiny_gguf

from .conftest import TINY_CONTEXT


def test_same_seed_same_bytes_other_seed_other_model(tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf").read_bytes()
    b = write_tiny_gguf(tmp_path / "b.gguf").read_bytes()
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=1).read_bytes()
    assert a == b and a != c and len(a) == len(c)


def test_words_are_single_tokens_and_markers_are_special(tiny_engine: Engine) -> None:
    assert len(tiny_engine.tokenize("hello world the sea")) == 4
    assert tiny_engine.tokenize("<|im_start|>", special=True) == [IM_START_ID]
    assert IM_START_ID not in tiny_engine.tokenize("<|im_start|>", special=False)
    assert tiny_engine.detokenize(tiny_engine.tokenize("café 🌊")) == " café 🌊"


def test_seed_changes_what_the_model_says(tmp_path: Path) -> None:
    from runa.protocol.params import SamplingParams

    answers = []
    for seed in (0, 1):
        engine = Engine(write_tiny_gguf(tmp_path / f"s{seed}.gguf", seed=seed), TINY_CONTEXT)
        engine.load()
        try:
            answers.append(engine.chat(
                engine.new_sequence(), [{"role": "user", "content": "hello"}],
                SamplingParams(temp=0, n_predict=8),
            ).tokens)  # fmt: skip
        finally:
            engine.unload()
    assert answers[0] != answers[1]
