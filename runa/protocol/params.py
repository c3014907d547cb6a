"""Inference parameters under llama.cpp's long option names (``-`` written as ``_``).

One vocabulary everywhere (TOML, persona front matter, bus payloads, DESIGN §4):
``temp``, ``top_k``, ``repeat_penalty``, ``mirostat_ent`` … Upstream persona and
llama-cpp-python spellings (``temperature``, ``mirostat_tau``, ``max_tokens`` …)
are accepted as aliases with a warning. Values are checked here, once, against the
ranges of ``runa.protocol.ranges`` (which ``runa config check`` uses too), so a bad
value is reported with its name and the allowed range instead of surfacing as a
llama.cpp assertion later.

They are part of the wire contract: splinfer judges a request's ``params`` by them, a
client (``runa ask``, the chat's ``/params``) before it sends them, and ``runa config
check`` the ``[splinfer]`` keys, without any of them importing splinfer.

Parameters split by when they apply: :class:`ContextParams` are fixed when the
model is loaded (changing them means a reload); :class:`SamplingParams` apply
per request.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runa.errors import UsageError
from runa.protocol import ranges
from runa.protocol.ranges import (  # noqa: F401 - param_problem re-exported
    CACHE_TYPES,
    QUANTIZED_CACHE_TYPES,
    SPECS,
    param_problem,
)

_log = logging.getLogger(__name__)


class ParamError(UsageError):
    """An inference parameter is unknown, of the wrong type or out of range."""

    exit_code = 64  # EX_USAGE

    def __init__(self, name: str, value: object, allowed: str, source: str = "") -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{name} = {value!r} is not allowed; {allowed}")


class UnknownParamError(ParamError):
    """A parameter name llama.cpp does not have (nor any accepted alias)."""

    def __init__(self, name: str, hint: str, source: str = "") -> None:
        self.name = name
        self.value = None
        self.allowed = hint
        self.source = source
        where = f"{source}: " if source else ""
        UsageError.__init__(self, f"{where}unknown parameter {name!r}; {hint}")


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


def _checked(name: str, raw: object, source: str) -> Any:
    """``raw`` as parameter ``name`` (``runa.protocol.ranges``); ParamError naming ``source``."""
    try:
        value = ranges.coerce(name, raw)
        ranges.check_range(name, value)
    except ranges.OutOfRange as error:
        raise ParamError(name, error.value, error.allowed, source) from None
    return value


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
        changes[name] = _checked(name, raw, source)
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
