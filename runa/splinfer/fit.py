"""Will the model fit the memory limit? Answered before loading, from the GGUF header.

A process over its cgroup's ``memory.max`` is killed by the kernel, mid-answer and
without a word; refusing up front with the numbers tells a person what to change.

Estimate (bytes), for llama.cpp on CPU with an f16 KV cache:

- weights  = the GGUF file size (mmapped; the pages count once touched)
- kv       = n_ctx * sum over layers of n_head_kv * (head_dim_k + head_dim_v) * 2
             (= n_layer * n_ctx * (n_embd_k_gqa + n_embd_v_gqa) * 2 for uniform layers)
- compute  = max(logits, attention) + activations, where
             logits     = n_ubatch * n_vocab * 4
             attention  = n_ubatch * n_ctx * n_head * 4 without flash attention, else 0
             activations = n_ubatch * (8 * n_embd + 6 * n_ff) * 4
- runtime  = a fixed allowance for the Python process itself (interpreter,
             llama_cpp, numpy: 48 MiB measured; 64 MiB by default)

Checked against llama.cpp's own reports for SmolLM2-135M (n_ubatch 512): KV
45.0/180.0 MiB at 2048/8192 tokens (exact); compute 102.5 MiB reported vs 123
estimated (flash attention, 2048), 166.4 vs 171 (no flash attention, 8192).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from runa.config import Config, parse_size
from runa.models import ModelInfo
from runa.protocol.params import CACHE_TYPES, ContextParams, parse_params
from runa.splinfer.errors import MemoryFitError

MIB = 1 << 20
DEFAULT_RUNTIME_OVERHEAD = 64 * MIB
#: The [splinfer] settings fixed when the model loads.
CONTEXT_SETTINGS = ("ctx_size", "threads", "batch_size", "flash_attn", "parallel",
                    "cache_type_k", "cache_type_v")


def configured_context(config: Config) -> ContextParams:
    """The context splinfer loads a model with, from the [splinfer] settings."""
    params, _ = parse_params({k: config[f"splinfer.{k}"] for k in CONTEXT_SETTINGS},
                             source="configuration [splinfer]")
    return params


def configured_limit(config: Config, unit_limit: int | None) -> int | None:
    """The tighter of ``splinfer.memory_max`` and the unit's ``MemoryMax=`` (None: no limit)."""
    limits = [unit_limit]
    if config["splinfer.memory_max"]:
        limits.append(parse_size(config["splinfer.memory_max"]))
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


@dataclass(frozen=True)
class Geometry:
    """The context sizes llama.cpp will really use for these parameters."""

    n_ctx: int
    n_batch: int
    n_ubatch: int

    @classmethod
    def resolve(cls, info: ModelInfo, params: ContextParams) -> Geometry:
        """Same clamping as llama-cpp-python's ``Llama``: batch <= ctx, ubatch <= batch."""
        n_ctx = params.ctx_size or info.n_ctx_train or 4096
        n_batch = min(n_ctx, params.batch_size)
        return cls(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=min(n_batch, params.ubatch_size))


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv: int
    compute: int
    runtime: int
    kv_per_token: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.runtime

    def describe(self) -> str:
        """``weights 94 MiB + KV 90 MiB + compute 123 MiB + runtime 64 MiB = 371 MiB``."""
        return (
            f"weights {_mib(self.weights)} + KV {_mib(self.kv)} + compute {_mib(self.compute)}"
            f" + runtime {_mib(self.runtime)} = {_mib(self.total)}"
        )


def _mib(n: int) -> str:
    return f"{n / MIB:.0f} MiB"


def kv_bytes_per_token(info: ModelInfo, params: ContextParams) -> int:
    """KV bytes one token costs with the context's cache types (f16: 2 bytes an element)."""
    k_bytes, v_bytes = CACHE_TYPES[params.cache_type_k], CACHE_TYPES[params.cache_type_v]
    return int(sum(kv * (info.head_dim_k * k_bytes + info.head_dim_v * v_bytes)
                   for kv in info.n_head_kv))


def estimate_memory(
    info: ModelInfo,
    params: ContextParams,
    *,
    runtime_overhead: int = DEFAULT_RUNTIME_OVERHEAD,
) -> MemoryEstimate:
    """Bytes the loaded model with ``params`` is expected to need (see module docstring)."""
    geo = Geometry.resolve(info, params)
    kv_per_token = kv_bytes_per_token(info, params)
    logits = geo.n_ubatch * info.n_vocab * 4
    attention = 0 if params.flash_attn else geo.n_ubatch * geo.n_ctx * max(info.n_head) * 4
    activations = geo.n_ubatch * (8 * info.n_embd + 6 * info.n_ff) * 4
    return MemoryEstimate(
        weights=info.file_size,
        kv=kv_per_token * geo.n_ctx,
        compute=max(logits, attention) + activations,
        runtime=runtime_overhead,
        kv_per_token=kv_per_token,
    )


def check_fit(
    info: ModelInfo,
    params: ContextParams,
    limit: int | None,
    *,
    runtime_overhead: int = DEFAULT_RUNTIME_OVERHEAD,
) -> MemoryEstimate:
    """Return the estimate, or raise MemoryFitError if it exceeds ``limit`` bytes.

    The error names the model, every term in MiB, the limit, and the largest
    ``ctx_size`` that would fit (if any does).
    """
    estimate = estimate_memory(info, params, runtime_overhead=runtime_overhead)
    if limit is None or estimate.total <= limit:
        return estimate
    best = largest_fitting_ctx(info, params, limit, runtime_overhead=runtime_overhead)
    advice = (
        f"ctx_size {best} would fit" if best else "no context size fits; pick a smaller model"
    )
    raise MemoryFitError(
        f"{info.path}: needs about {_mib(estimate.total)} ({estimate.describe()}, context "
        f"{Geometry.resolve(info, params).n_ctx} tokens) but the memory limit is {_mib(limit)}; "
        f"{advice}, or raise the limit (MemoryMax)."
    )


def largest_fitting_ctx(
    info: ModelInfo,
    params: ContextParams,
    limit: int,
    *,
    runtime_overhead: int = DEFAULT_RUNTIME_OVERHEAD,
    minimum: int = 256,
) -> int | None:
    """The biggest ctx_size (a multiple of 256, at least ``minimum``) within ``limit``."""

    def fits(n_ctx: int) -> bool:
        trial = dataclasses.replace(params, ctx_size=n_ctx)
        return estimate_memory(info, trial, runtime_overhead=runtime_overhead).total <= limit

    low, high = minimum // 256, max(minimum, Geometry.resolve(info, params).n_ctx) // 256
    if not fits(low * 256):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid * 256):
            low = mid
        else:
            high = mid - 1
    return low * 256
