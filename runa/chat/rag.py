"""Retrieval in the chat (``/rag on TOPIC``): each question goes with its sources.

The sources come from tieto (the daemon when it runs, else the library: runa.tieto.access)
and travel inside the user's turn (runa.tieto.answer.chat_turn), so the conversation's
system prompt, and the model state splinfer saved for it, stay as they are. Citations in
the answer are filtered to the sources given; the REPL prints the sources after it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack

from runa.tieto import Grounding, Local, Remote


class Retrieval:
    """Opens tieto on first use (a chat without /rag never loads it) and keeps it open."""

    def __init__(self, opener: Callable[[], AbstractContextManager[Local | Remote]],
                 uncited: str | None = None) -> None:
        self._opener = opener
        self.uncited = uncited
        """``tieto.uncited`` of this chat's configuration (None: tieto's own)."""
        self._stack = ExitStack()
        self._access: Local | Remote | None = None

    def _tieto(self) -> Local | Remote:
        if self._access is None:
            self._access = self._stack.enter_context(self._opener())
        return self._access

    def topics(self) -> list[str]:
        return self._tieto().topics()

    def ground(self, question: str, topic: str) -> Grounding:
        return self._tieto().ground(question, topic, uncited=self.uncited)

    def close(self) -> None:
        self._stack.close()
