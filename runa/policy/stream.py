"""The contract between a token stream and the policy that watches it (tier 1, inline).

The engine samples a token, feeds it to the model and asks the gate what may reach the
person. The gate *holds* the newest tokens while they could still be the start of a
motif, so a motif of several tokens is caught before any of its tokens is streamed. The
engine keeps the held tokens in order; the gate answers each token with a ``GateStep``:

1. ``take_back``: withdraw this many of the newest held tokens (the one just fed included).
   The engine removes the ones already evaluated from the sequence's model state, so the
   model continues from what the person sees, not from the withdrawn text.
2. ``release``: then stream this many of the oldest held tokens. When tokens are taken back,
   everything held before them is released first (``release`` equals what is left held).
3. ``insert``: then stream these tokens (a mask's replacement, a block's refusal) and feed
   them to the model in place of the withdrawn ones; they are not checked again.
4. ``stop``: then end the answer (finish reason ``policy``, ``reason`` as given); inserted
   tokens are streamed but not evaluated.

``finish`` is asked once when the answer ends for any other reason (end of turn, length,
context, cancel), with the end of the answer as the end of the text: what is still held is
released, or withdrawn and replaced (a mask), and a finish step may ``stop`` (a block found
at the end): the engine then reports finish reason ``policy`` with the step's ``reason``,
not the reason the answer was ending for.

This module is the shared seat of the contract: runa.policy implements gates, splinfer's
engine drives them, neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from runa.policy.verdict import Intervention


@dataclass(frozen=True)
class GateStep:
    """What the engine does with the held tokens after one token (see the module docstring)."""

    release: int = 0
    take_back: int = 0
    insert: tuple[int, ...] = ()
    stop: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        if self.release < 0 or self.take_back < 0:
            raise ValueError("release and take_back count tokens: they cannot be negative")


#: Nothing to do: the token stays held (or, for a gate that holds nothing, see ``RELEASE_ONE``).
HOLD = GateStep()
#: Stream the token just fed at once (a gate with nothing partially matched).
RELEASE_ONE = GateStep(release=1)


class StreamGate(Protocol):
    """One answer's tier-1 watch over its output tokens (one gate per answer)."""

    @property
    def interventions(self) -> Sequence[Intervention]:
        """What the gate did, for the events and the final envelope (read once it ends)."""
        ...

    @property
    def whispers(self) -> Sequence[str]:
        """Notes (whisper actions) for the next turn, each once."""
        ...

    def feed(self, token: int, piece: bytes) -> GateStep:
        """The token just sampled and its raw bytes (maybe part of a UTF-8 character)."""
        ...

    def finish(self) -> GateStep:
        """The answer ends for another reason: what happens to the tokens still held."""
        ...
