"""A sequence: one conversation's tokens as they sit in the model's KV cache.

The engine's context holds up to ``parallel`` sequences at once (llama.cpp's
``n_seq_max``, with one unified KV cache all of them share). A Sequence object
belongs to its user (a conversation, or one one-shot answer) for as long as that
lives; while it is *resident* it has a slot (``seq_id`` >= 0) and ``tokens``
says exactly which tokens the KV cache holds for it, position by position. When
the engine needs the slot for someone else it evicts the least recently used idle
sequence: the engine's eviction hook runs first (the daemon saves the state to a
file there), then the slot is cleared and ``seq_id`` goes back to -1.

Everything that belongs to a conversation's model state is here and nowhere else,
so a sequence can be saved, evicted and restored on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: ``seq_id`` of a sequence that has no slot in the context.
NOT_RESIDENT = -1


@dataclass(eq=False)
class Sequence:
    """Tokens whose keys and values are in the context under ``seq_id``, in order."""

    seq_id: int = NOT_RESIDENT
    tokens: list[int] = field(default_factory=list)
    owner: str = ""
    """Who the sequence belongs to (a conversation id; empty for a one-shot answer)."""
    last_used: int = 0
    """Engine tick of the last use; the least recently used idle sequence is evicted first."""

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    @property
    def resident(self) -> bool:
        return self.seq_id != NOT_RESIDENT

    def common_prefix(self, prompt: list[int]) -> int:
        """How many leading tokens of ``prompt`` are already evaluated."""
        n = 0
        for a, b in zip(self.tokens, prompt, strict=False):
            if a != b:
                break
            n += 1
        return n
