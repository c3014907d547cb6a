"""Inference parameters under llama.cpp's long option names (``-`` written as ``_``).

One vocabulary everywhere (TOML, persona front matter, bus payloads, DESIGN §4):
``temp``, ``top_k``, ``repeat_penalty``, ``mirostat_ent`` … Upstream persona and
llama-cpp-python spellings (``temperature``, ``mirostat_tau``, ``max_tokens`` …)
are accepted as aliases with a warning. Values are checked here, once, so a bad
value is reported with its name and the allowed range instead of surfacing as a
llama.cpp assertion later.

Parameters split by when they apply: :class:`ContextParams` are fixed when the
model is loaded (changing them means a reload); :class:`SamplingParams` apply
per request.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runa.splinfer.errors import ParamError, UnknownParamError

_log = logging.getLogger(__name__)


#: KV cache element types llama.cpp accepts (``--cache-type-k``) and bytes per element.
CACHE_TYPES: Mapping[str, float] = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
    "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32,
}
QUANTIZED_CACHE_TYPES = frozenset(CACHE_TYPES) - {"f32", "f16", "bf16"}


@dataclass(frozen=True)
class ContextParams:
    """Settings fixed at load time. Defaults are llama.cpp's."""

    ctx_size: int = 4096
    """Context length in tokens; 0 means the model's training context."""
    batch_size: int = 2048
    ubatch_size: int = 512
    threads: int = -1
    """-1: one per CPU this process may run on."""
    threads_batch: int = -1
    """-1: same as ``threads``."""
    flash_attn: bool = True
    """llama.cpp's ``auto`` turns it on for CPU; it is faster and smaller there."""
    parallel: int = 1
    """Sequences (conversations) decoded together in the one context (llama.cpp's
    ``-np``); they share one unified KV cache of ``ctx_size`` cells (``-kvu``)."""
    cache_type_k: str = "f16"
    """Element type of the K cache (``-ctk``): f32, f16, bf16 or a quantized type."""
    cache_type_v: str = "f16"
    """Element type of the V cache (``-ctv``); a quantized one needs flash attention."""

    def __post_init__(self) -> None:
        if self.cache_type_v in QUANTIZED_CACHE_TYPES and not self.flash_attn:
            raise ParamError("cache_type_v", self.cache_type_v,
                             "a quantized V cache needs flash_attn on (llama.cpp)")


@dataclass(frozen=True)
class SamplingParams:
    """Settings per request. Defaults are llama.cpp's; ``temp`` 0 means greedy."""

    temp: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    """-1: a different random seed each request."""
    n_predict: int = -1
    """-1: until end of turn or a full context."""
    mirostat: int = 0
    mirostat_lr: float = 0.1
    mirostat_ent: float = 5.0

    @property
    def greedy(self) -> bool:
        return self.temp == 0.0


@dataclass(frozen=True)
class _Spec:
    kind: type
    low: float | None
    high: float | None
    allowed: str
    special: tuple[int, ...] = ()
    """Values outside the range that still mean something (e.g. -1 = automatic)."""


def _spec(kind: type, low: float | None, high: float | None, allowed: str, *special: int) -> _Spec:
    return _Spec(kind, low, high, allowed, tuple(special))


_U32 = 2**32 - 1
SPECS: Mapping[str, _Spec] = {
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

#: Other spellings people bring from upstream Runa personas and llama-cpp-python.
ALIASES: Mapping[str, str] = {
    "temperature": "temp",
    "mirostat_tau": "mirostat_ent",
    "mirostat_eta": "mirostat_lr",
    "mirostat_mode": "mirostat",
    "max_tokens": "n_predict",
    "n_ctx": "ctx_size",
    "n_batch": "batch_size",
    "n_ubatch": "ubatch_size",
    "n_threads": "threads",
    "n_threads_batch": "threads_batch",
    "n_parallel": "parallel",
    "n_seq_max": "parallel",
    "type_k": "cache_type_k",
    "type_v": "cache_type_v",
    "typical_p": "typical",
    "last_n_tokens_size": "repeat_last_n",
    "repetition_penalty": "repeat_penalty",
}

_CONTEXT_FIELDS = {f.name for f in dataclasses.fields(ContextParams)}
_SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingParams)}
_TRUE = {"1", "true", "yes", "on", "auto", "enabled"}
_FALSE = {"0", "false", "no", "off", "disabled"}


def _coerce(name: str, raw: object, spec: _Spec, source: str) -> Any:
    """Turn ``raw`` (a TOML/JSON value or a command-line string) into the field's type."""
    bad = ParamError(name, raw, f"expected {spec.kind.__name__}: {spec.allowed}", source)
    if spec.kind is str:
        if isinstance(raw, str) and raw.strip().lower() in CACHE_TYPES:
            return raw.strip().lower()
        raise ParamError(name, raw, f"one of {spec.allowed}", source)
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


def _check_range(name: str, value: Any, spec: _Spec, source: str) -> None:
    if spec.kind in (bool, str) or value in spec.special:
        return
    low_ok = spec.low is None or (
        value > spec.low if name in _EXCLUSIVE_LOW else value >= spec.low
    )
    high_ok = spec.high is None or value <= spec.high
    if not (low_ok and high_ok):
        raise ParamError(name, value, f"allowed: {spec.allowed}", source)


def param_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be parameter ``name`` ("must be …"), or None when it can.

    The configuration checks its ``[splinfer]`` keys with this, so a value the
    daemon would refuse at start is refused by ``runa config check`` too.
    """
    spec = SPECS[name]
    try:
        _check_range(name, _coerce(name, value, spec, ""), spec, "")
    except ParamError:
        return f"must be {spec.allowed}"
    return None


def canonical_name(
    name: str, *, source: str = "", warn: Callable[[str], None] | None = None
) -> str:
    """The llama.cpp name for ``name``; warns about aliases, rejects unknown names."""
    key = name.strip().replace("-", "_").lower()
    if key in ALIASES:
        target = ALIASES[key]
        (warn or _log.warning)(
            f"{source + ': ' if source else ''}{name!r} is an alias; write {target!r} instead"
        )
        return target
    if key in SPECS:
        return key
    close = difflib.get_close_matches(key, [*SPECS, *ALIASES], n=1)
    if close:
        hint = f"did you mean {ALIASES.get(close[0], close[0])!r}?"
    else:
        hint = "known: " + ", ".join(sorted(SPECS))
    raise UnknownParamError(name, hint, source)


def parse_params(
    values: Mapping[str, object],
    *,
    context: ContextParams | None = None,
    sampling: SamplingParams | None = None,
    source: str = "",
    warn: Callable[[str], None] | None = None,
) -> tuple[ContextParams, SamplingParams]:
    """Apply ``values`` on top of ``context``/``sampling`` (default: llama.cpp defaults).

    ``source`` names where the values came from (a file, ``--temp``, a bus
    request) for error messages. Raises ParamError for an unknown name, a value
    of the wrong type or one out of range; two spellings of one parameter in the
    same mapping are an error too.
    """
    context = context or ContextParams()
    sampling = sampling or SamplingParams()
    changes: dict[str, Any] = {}
    for raw_name, raw in values.items():
        name = canonical_name(raw_name, source=source, warn=warn)
        if name in changes:
            raise ParamError(raw_name, raw, f"{name} is already set in the same place", source)
        spec = SPECS[name]
        value = _coerce(name, raw, spec, source)
        _check_range(name, value, spec, source)
        changes[name] = value
    try:
        new_context = dataclasses.replace(
            context, **{k: v for k, v in changes.items() if k in _CONTEXT_FIELDS}
        )
    except ParamError as error:  # a combination llama.cpp refuses
        raise ParamError(error.name, error.value, error.allowed, source) from None
    new_sampling = dataclasses.replace(
        sampling, **{k: v for k, v in changes.items() if k in _SAMPLING_FIELDS}
    )
    return new_context, new_sampling


def as_dict(context: ContextParams, sampling: SamplingParams) -> dict[str, object]:
    """Both parameter sets as one flat mapping under llama.cpp names (for ``params``)."""
    return {**dataclasses.asdict(context), **dataclasses.asdict(sampling)}
