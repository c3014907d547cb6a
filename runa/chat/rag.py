"""Retrieval in the chat (``/rag on TOPIC``): each question goes with its sources.

The sources come from tieto (the daemon when it runs, else the library; the CLI opens it
with runa.tieto.access, so the chat itself imports no part of tieto) and travel inside the
user's turn (runa.protocol.answer.chat_turn), so the conversation's
system prompt, and the model state splinfer saved for it, stay as they are. Citations in
the answer are filtered to the sources given; the REPL prints the sources after it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from typing import Any, Protocol

from runa.protocol.answer import Grounding


class Grounder(Protocol):
    """What /rag needs of tieto; the command hands in the daemon's or the library's."""

    def topics(self) -> list[str]: ...

    def ground(self, question: str, topic: str, **overrides: Any) -> Grounding: ...


class Retrieval:
    """Opens tieto on first use (a chat without /rag never loads it) and keeps it open."""

    def __init__(self, opener: Callable[[], AbstractContextManager[Grounder]],
                 uncited: str | None = None) -> None:
        self._opener = opener
        self.uncited = uncited
        """``tieto.uncited`` of this chat's configuration (None: tieto's own)."""
        self._stack = ExitStack()
        self._access: Grounder | None = None

    def _tieto(self) -> Grounder:
        if self._access is None:
            self._access = self._stack.enter_context(self._opener())
        return self._access

    def topics(self) -> list[str]:
        return self._tieto().topics()

    def ground(self, question: str, topic: str) -> Grounding:
        return self._tieto().ground(question, topic, uncited=self.uncited)

    def close(self) -> None:
        self._stack.close()
