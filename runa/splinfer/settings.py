"""splinfer's settings, the [splinfer] section.

The llama.cpp options take their ranges from ``runa.protocol.ranges``, the table splinfer's
request validation uses too, so ``runa config check`` refuses exactly what splinfer would.
"""

from __future__ import annotations

from runa.config import Check, Setting, in_range, one_of, size_check
from runa.protocol.ranges import param_problem


def llama_param(name: str) -> Check:
    """The range llama.cpp's option ``name`` allows, as splinfer's requests are judged."""
    return lambda value: param_problem(name, value)


SETTINGS: tuple[Setting, ...] = (
    Setting("splinfer.model", str, "default",
            "The chat model: a catalog name, a file in a models directory, or a path."),
    Setting("splinfer.ctx_size", int, 4096, "Context length in tokens (0: the model's own).",
            llama_param("ctx_size")),
    Setting("splinfer.threads", int, -1, "Threads for generation (-1: one per usable CPU, "
            "fewer while other programs keep CPUs busy).",
            llama_param("threads")),
    Setting("splinfer.batch_size", int, 2048, "Logical batch size for prompt processing.",
            llama_param("batch_size")),
    Setting("splinfer.flash_attn", bool, True, "Use flash attention (faster and smaller on CPU)."),
    Setting("splinfer.memory_max", str, "",
            "Refuse a model that would need more (empty: the unit's MemoryMax= only).",
            lambda v: None if v == "" else size_check(v)),
    Setting("splinfer.idle_unload_s", float, 300.0,
            "Unload the model after this many idle seconds (0: never).", in_range(0, 1e7)),
    Setting("splinfer.stream_flush_ms", float, 50.0,
            "Streamed text is sent at most this often (the first piece at once; 0: every token).",
            in_range(0, 1000)),
    Setting("splinfer.stream_timeout_s", float, 10.0,
            "Give up on a reader that has not made room in its reply channel for this long.",
            in_range(0.1, 3600)),
    Setting("splinfer.cache_type_k", str, "f16",
            "Element type of the K cache: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1.",
            one_of("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")),
    Setting("splinfer.cache_type_v", str, "f16",
            "Element type of the V cache (a quantized one needs flash_attn).",
            one_of("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")),
    Setting("splinfer.parallel", int, 4,
            "Conversations decoded together, one sequence each, sharing the context's cells.",
            llama_param("parallel")),
    Setting("splinfer.persona", str, "default",
            "The persona of one-shot turns and of new conversations that name none."),
    Setting("splinfer.state_max_mib", int, 1024,
            "Saved conversation states (KV cache files) kept at most; the oldest go first.",
            in_range(0, 1 << 24)),
    Setting("splinfer.state_max_age_days", float, 30.0,
            "Drop a saved conversation state not used for this many days (0: no age limit); "
            "the history is kept.", in_range(0, 36500)),
    Setting("splinfer.state_save_idle_s", float, 30.0,
            "Save an idle conversation's state after this many seconds (0: only when it leaves).",
            in_range(0, 1e7)),
    Setting("splinfer.whisper_timeout_ms", float, 1500.0,
            "How long a prompt waits for the semantic tier (whisper), for every 1000 "
            "characters begun, before the policy's fail rule applies; an answer's window as "
            "long.", in_range(10, 60000)),
    Setting("splinfer.whisper_window_tokens", int, 64,
            "The answer is judged by the semantic tier every this many tokens (0: the prompt "
            "only).", in_range(0, 4096)),
)
