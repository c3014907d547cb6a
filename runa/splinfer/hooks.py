"""What the per-token hook may answer, and the callable types the engine accepts.

The hook is the one place where a token-level policy (tokenWhisper) sees every
generated token before anyone else does: before it is streamed, before it is
fed back into the model. It answers continue, stop, or replace.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass


class Action(enum.Enum):
    CONTINUE = "continue"
    STOP = "stop"
    REPLACE = "replace"


@dataclass(frozen=True)
class TokenDecision:
    """The hook's answer about one sampled token."""

    action: Action
    tokens: tuple[int, ...] = ()
    """For REPLACE: the tokens streamed and fed back instead (at least one)."""
    reason: str = ""

    def __post_init__(self) -> None:
        if self.action is Action.REPLACE and not self.tokens:
            raise ValueError("a replacement needs at least one token")


CONTINUE = TokenDecision(Action.CONTINUE)


def stop(reason: str = "") -> TokenDecision:
    """End the answer here; the sampled token is dropped."""
    return TokenDecision(Action.STOP, reason=reason)


def replace(tokens: tuple[int, ...] | list[int], reason: str = "") -> TokenDecision:
    """Stream and evaluate ``tokens`` instead of the sampled token."""
    return TokenDecision(Action.REPLACE, tuple(tokens), reason)


#: ``hook(token_id, piece_bytes)``; None means continue. ``piece`` is the raw
#: bytes of the token's text, which may be part of a multi-byte character.
TokenHook = Callable[[int, bytes], TokenDecision | None]
#: Receives decoded text as it becomes available (complete characters only).
TextSink = Callable[[str], None]
#: Called from inside long llama.cpp decodes and between tokens (throttled).
ProgressCallback = Callable[[], None]
#: A threading.Event or a callable; true means stop as soon as possible.
Cancel = threading.Event | Callable[[], bool]


def cancel_check(cancel: Cancel | None) -> Callable[[], bool]:
    """One callable form for the accepted kinds of cancel signal."""
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel
