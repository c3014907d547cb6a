"""The inference parameters' ranges, under llama.cpp's long option names (``-`` as ``_``).

One table for everyone who judges a value: splinfer when it loads a model or takes a request
(``runa.protocol.params``), and ``runa config check`` for the ``[splinfer]`` keys, so the
check refuses exactly what the daemon would. A value is first made the parameter's type
(``coerce``: a TOML/JSON value or a command-line string), then held against its range
(``check_range``); either raises OutOfRange saying what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: KV cache element types llama.cpp accepts (``--cache-type-k``) and bytes per element.
CACHE_TYPES: Mapping[str, float] = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
    "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32,
}
QUANTIZED_CACHE_TYPES = frozenset(CACHE_TYPES) - {"f32", "f16", "bf16"}


class OutOfRange(ValueError):
    """``value`` cannot be parameter ``name``; ``allowed`` says what can."""

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{name} = {value!r} is not allowed; {allowed}")


@dataclass(frozen=True)
class Spec:
    kind: type
    low: float | None
    high: float | None
    allowed: str
    special: tuple[int, ...] = ()
    """Values outside the range that still mean something (e.g. -1 = automatic)."""


def _spec(kind: type, low: float | None, high: float | None, allowed: str, *special: int) -> Spec:
    return Spec(kind, low, high, allowed, tuple(special))


_U32 = 2**32 - 1
SPECS: Mapping[str, Spec] = {
    "ctx_size": _spec(int, 16, 2**20, "0 (the model's own) or 16 to 1048576", 0),
    "batch_size": _spec(int, 1, 65536, "1 to 65536"),
    "ubatch_size": _spec(int, 1, 65536, "1 to 65536"),
    "threads": _spec(int, 1, 1024, "-1 (automatic) or 1 to 1024", -1),
    "threads_batch": _spec(int, 1, 1024, "-1 (same as threads) or 1 to 1024", -1),
    "flash_attn": _spec(bool, None, None, "on/off (true/false)"),
    "parallel": _spec(int, 1, 64, "1 to 64"),
    "cache_type_k": _spec(str, None, None, ", ".join(CACHE_TYPES)),
    "cache_type_v": _spec(str, None, None, ", ".join(CACHE_TYPES)),
    "temp": _spec(float, 0.0, 100.0, "0 (greedy) to 100"),
    "top_k": _spec(int, 0, 2**31 - 1, "0 (off) or more"),
    "top_p": _spec(float, 0.0, 1.0, "0 to 1 (1 = off)"),
    "min_p": _spec(float, 0.0, 1.0, "0 (off) to 1"),
    "typical": _spec(float, 0.0, 1.0, "0 to 1 (1 = off)"),
    "repeat_penalty": _spec(float, 0.0, 10.0, "above 0 up to 10 (1 = off)"),
    "repeat_last_n": _spec(int, 0, 2**20, "-1 (whole context), 0 (off) or up to 1048576", -1),
    "presence_penalty": _spec(float, -10.0, 10.0, "-10 to 10 (0 = off)"),
    "frequency_penalty": _spec(float, -10.0, 10.0, "-10 to 10 (0 = off)"),
    "seed": _spec(int, 0, _U32 - 1, f"-1 (random) or 0 to {_U32 - 1}", -1),
    "n_predict": _spec(int, 0, 2**20, "-1 (until done) or 0 to 1048576", -1),
    "mirostat": _spec(int, 0, 2, "0 (off), 1 or 2"),
    "mirostat_lr": _spec(float, 0.0, 1.0, "0 to 1"),
    "mirostat_ent": _spec(float, 0.0, 100.0, "0 to 100"),
}
_EXCLUSIVE_LOW = {"repeat_penalty"}
_TRUE = {"1", "true", "yes", "on", "auto", "enabled"}
_FALSE = {"0", "false", "no", "off", "disabled"}


def coerce(name: str, raw: object) -> Any:
    """``raw`` (a TOML/JSON value or a command-line string) as parameter ``name``'s type."""
    spec = SPECS[name]
    bad = OutOfRange(name, raw, f"expected {spec.kind.__name__}: {spec.allowed}")
    if spec.kind is str:
        if isinstance(raw, str) and raw.strip().lower() in CACHE_TYPES:
            return raw.strip().lower()
        raise OutOfRange(name, raw, f"one of {spec.allowed}")
    if spec.kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise bad
    if isinstance(raw, bool):
        raise bad
    try:
        if spec.kind is int:
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise bad
                return int(raw)
            return int(raw) if isinstance(raw, int) else int(str(raw).strip(), 10)
        value = float(raw) if isinstance(raw, (int, float)) else float(str(raw).strip())
    except (TypeError, ValueError):
        raise bad from None
    if not math.isfinite(value):
        raise bad
    return value


def check_range(name: str, value: Any) -> None:
    """OutOfRange unless ``value`` (already of the parameter's type) is in its range."""
    spec = SPECS[name]
    if spec.kind in (bool, str) or value in spec.special:
        return
    low_ok = spec.low is None or (
        value > spec.low if name in _EXCLUSIVE_LOW else value >= spec.low
    )
    high_ok = spec.high is None or value <= spec.high
    if not (low_ok and high_ok):
        raise OutOfRange(name, value, f"allowed: {spec.allowed}")


def param_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be parameter ``name`` ("must be …"), or None when it can."""
    try:
        check_range(name, coerce(name, value))
    except OutOfRange:
        return f"must be {SPECS[name].allowed}"
    return None
