"""Inference parameters: llama.cpp names, upstream aliases, ranges that say what is allowed."""

from __future__ import annotations

import pytest

from runa.protocol.params import (
    ContextParams,
    ParamError,
    SamplingParams,
    UnknownParamError,
    parse_params,
)


def test_llama_cpp_names_set_both_kinds_of_parameter() -> None:
    context, sampling = parse_params({"ctx_size": 1024, "flash_attn": False, "top_k": 5})
    assert context == ContextParams(ctx_size=1024, flash_attn=False)
    assert sampling == SamplingParams(top_k=5)


def test_upstream_aliases_work_with_a_warning() -> None:
    warnings: list[str] = []
    _, sampling = parse_params(
        {"temperature": 0.2, "mirostat_tau": 3.0, "max_tokens": 50},
        source="persona rei",
        warn=warnings.append,
    )
    assert (sampling.temp, sampling.mirostat_ent, sampling.n_predict) == (0.2, 3.0, 50)
    assert len(warnings) == 3
    assert any("'temperature'" in w and "'temp'" in w and "persona rei" in w for w in warnings)


def test_command_line_strings_and_dashes_are_accepted() -> None:
    warnings: list[str] = []
    context, sampling = parse_params(
        {"top-k": "7", "temp": "0.5", "flash-attn": "off"}, warn=warnings.append
    )
    assert (sampling.top_k, sampling.temp, context.flash_attn) == (7, 0.5, False)
    assert warnings == []


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("top_p", 1.5, "0 to 1"),
        ("temp", -0.1, "0 (greedy) to 100"),
        ("repeat_penalty", 0, "above 0"),
        ("mirostat", 3, "0 (off), 1 or 2"),
        ("threads", 0, "-1 (automatic) or 1 to 1024"),
        ("seed", -2, "-1 (random)"),
        ("ctx_size", 8, "0 (the model's own) or 16"),
    ],
)
def test_out_of_range_names_parameter_value_and_range(name: str, value: object, allowed: str):
    with pytest.raises(ParamError) as err:
        parse_params({name: value}, source="--" + name)
    message = str(err.value)
    assert name in message and repr(value) in message and allowed in message
    assert message.startswith("--" + name)


@pytest.mark.parametrize(
    ("name", "value"),
    [("top_k", "lots"), ("top_k", 2.5), ("n_predict", True), ("temp", float("nan")),
     ("flash_attn", "maybe"), ("min_p", None)],
)  # fmt: skip
def test_wrong_types_are_refused(name: str, value: object) -> None:
    with pytest.raises(ParamError, match=name):
        parse_params({name: value})


def test_special_values_outside_the_range_are_accepted() -> None:
    context, sampling = parse_params(
        {"seed": -1, "n_predict": -1, "threads": -1, "repeat_last_n": -1, "ctx_size": 0}
    )
    assert (context.threads, context.ctx_size) == (-1, 0)
    assert (sampling.seed, sampling.n_predict, sampling.repeat_last_n) == (-1, -1, -1)


def test_unknown_name_suggests_the_right_one() -> None:
    with pytest.raises(UnknownParamError, match="did you mean 'temp'"):
        parse_params({"temprature": 0.3})


def test_same_parameter_twice_is_an_error() -> None:
    with pytest.raises(ParamError, match="already set"):
        parse_params({"temp": 0.1, "temperature": 0.2}, warn=lambda _: None)


def test_layers_apply_on_top_of_each_other() -> None:
    context, sampling = parse_params({"temp": 0.3, "ctx_size": 2048})
    context, sampling = parse_params({"top_k": 9}, context=context, sampling=sampling)
    assert (context.ctx_size, sampling.temp, sampling.top_k) == (2048, 0.3, 9)


def test_sequences_and_kv_cache_types_are_context_options() -> None:
    warnings: list[str] = []
    context, _ = parse_params({"parallel": 4, "cache_type_k": "Q8_0", "type_v": "q8_0",
                               "flash_attn": True}, warn=warnings.append)
    assert (context.parallel, context.cache_type_k, context.cache_type_v) == (4, "q8_0", "q8_0")
    assert warnings == ["'type_v' is an alias; write 'cache_type_v' instead"]
    with pytest.raises(ParamError, match=r"cache_type_k = 'f8'.*one of f32, f16, bf16, q8_0"):
        parse_params({"cache_type_k": "f8"})
    with pytest.raises(ParamError, match="parallel = 0 is not allowed; allowed: 1 to 64"):
        parse_params({"parallel": 0})


def test_a_quantized_v_cache_needs_flash_attention() -> None:
    with pytest.raises(ParamError, match=r"runa\.toml: cache_type_v = 'q4_0'.*needs flash_attn"):
        parse_params({"cache_type_v": "q4_0", "flash_attn": False}, source="runa.toml")
    assert parse_params({"cache_type_v": "q4_0"})[0].flash_attn  # on by default: fine
