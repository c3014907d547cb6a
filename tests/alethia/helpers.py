"""What the store's tests share: a clock a test moves by hand, keys, a chat turn."""

from __future__ import annotations

from runa.alethia.store import Keys

DAY = 86400.0
MONDAY = 1_796_601_600.0  # 2026-12-07 00:00 UTC


class Clock:
    """A wall clock a test sets: the store files records under its UTC day."""

    def __init__(self, now: float = MONDAY + 3600) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def next_day(self) -> None:
        self.now += DAY


def new_keys(memory: bytes = b"m" * 32, seed: bytes = b"s" * 32, version: int = 1) -> Keys:
    return Keys(memory={version: bytearray(memory)}, signing_seed=bytearray(seed))


def turn(number: int, conversation: str = "conv-a") -> dict[str, object]:
    return {"user": f"question number {number} about the lighthouse keeper",
            "answer": f"answer number {number}: the lamp is lit at dusk",
            "conversation": conversation, "persona": "default", "interventions": [],
            "feedback": None}
