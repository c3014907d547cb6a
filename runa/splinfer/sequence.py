"""A sequence: one conversation's tokens as they sit in the model's KV cache.

The engine decodes one sequence at a time for now, but everything that belongs
to a conversation's model state is here and nowhere else (its sequence id in the
context and the tokens evaluated so far), so several sequences can later share
one context, each saved and restored on its own (issue 6).

The way there: ``llama_cpp.Llama`` cannot make a context with more than one
sequence, so build a second one from ``llm.model`` with ``llama_init_from_model``
and ``n_seq_max`` > 1 (``kv_unified`` on); put rows of several sequences in one
batch (``Engine._decode`` already writes each row's sequence id); keep one
``Sampler`` per sequence and sample each from its own batch row; and replace the
engine's single-slot ``_claim`` with a slot allocator that calls ``save_state``
on the sequence it evicts. Note that a position decoded in a batch of a different
shape is not bit-identical (flash attention rounds to f16; quantised matmuls take
other kernels), so "the same answer as alone" needs the same batching, or a
tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sequence:
    """Tokens whose keys and values are in the context under ``seq_id``, in order."""

    seq_id: int = 0
    tokens: list[int] = field(default_factory=list)

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def common_prefix(self, prompt: list[int]) -> int:
        """How many leading tokens of ``prompt`` are already evaluated."""
        n = 0
        for a, b in zip(self.tokens, prompt, strict=False):
            if a != b:
                break
            n += 1
        return n
