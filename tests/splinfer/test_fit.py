"""The memory fit check refuses before loading, with the numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from runa.models.gguf_info import read_model_info
from runa.protocol.params import ContextParams
from runa.splinfer.engine import Engine
from runa.splinfer.errors import MemoryFitError
from runa.splinfer.fit import (
    MIB,
    check_fit,
    estimate_memory,
    largest_fitting_ctx,
)


def test_kv_estimate_follows_the_formula(tiny_model: Path) -> None:
    info = read_model_info(tiny_model)
    est = estimate_memory(info, ContextParams(ctx_size=512))
    # n_layer x n_ctx x (n_embd_k_gqa + n_embd_v_gqa) x 2 bytes = 2 x 512 x (32 + 32) x 2
    assert est.kv == 2 * 512 * 64 * 2
    assert est.weights == tiny_model.stat().st_size
    bigger = estimate_memory(info, ContextParams(ctx_size=1024))
    assert bigger.kv == 2 * est.kv


def test_refusal_happens_before_llama_cpp_is_touched(tiny_model: Path) -> None:
    calls: list[dict[str, object]] = []

    def factory(**kwargs: object) -> object:
        calls.append(kwargs)
        raise AssertionError("must not load")

    engine = Engine(tiny_model, ContextParams(ctx_size=512), memory_limit=32 * MIB,
                    llama_factory=factory)  # fmt: skip
    with pytest.raises(MemoryFitError) as err:
        engine.load()
    message = str(err.value)
    assert calls == [] and not engine.loaded
    assert str(tiny_model) in message
    assert "memory limit is 32 MiB" in message and "runtime 64 MiB" in message
    assert "no context size fits" in message


def test_refusal_suggests_a_context_that_fits(tiny_model: Path) -> None:
    info = read_model_info(tiny_model)
    params = ContextParams(ctx_size=65536, flash_attn=False)
    needed = estimate_memory(info, params).total
    limit = needed - 20 * MIB
    with pytest.raises(MemoryFitError, match=r"ctx_size \d+ would fit") as err:
        check_fit(info, params, limit)
    assert f"{needed / MIB:.0f} MiB" in str(err.value)
    best = largest_fitting_ctx(info, params, limit)
    assert best is not None and f"ctx_size {best} would fit" in str(err.value)
    assert estimate_memory(info, ContextParams(ctx_size=best, flash_attn=False)).total <= limit
    assert estimate_memory(info, ContextParams(ctx_size=best + 256, flash_attn=False)).total > limit


def test_loads_when_the_estimate_is_exactly_the_limit(tiny_model: Path) -> None:
    params = ContextParams(ctx_size=512, threads=2)
    needed = estimate_memory(read_model_info(tiny_model), params).total
    with pytest.raises(MemoryFitError):
        Engine(tiny_model, params, memory_limit=needed - 1).load()
    engine = Engine(tiny_model, params, memory_limit=needed)
    engine.load()
    try:
        assert engine.loaded and engine.estimate is not None
        assert engine.estimate.total == needed
    finally:
        engine.unload()
