"""``/remember …`` in the chat: the person's own past turns nearest in meaning to what they
typed, asked of alethia's search (kind ``turn``). When alethia is not running or search is
off, the person is told in one line and the chat goes on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime
from typing import Any

from runa import stackbus
from runa.client import ServiceUnavailable
from runa.errors import RunaError
from runa.memory_client import (
    MemoryClient,
    MemoryFault,
    NoEmbeddingModel,
    index_state,
    search_refused,
)
from runa.protocol import memory as proto

#: Matches /remember shows, how long it waits, and how much of each excerpt.
REMEMBER_K, REMEMBER_TIMEOUT_S, EXCERPT_CHARS = 3, 10.0, 160
OFF_LINE = "memory search is off: alethia is not running"


class PastTurns:
    """Opens alethia on the first /remember (a chat without it never asks) and keeps it."""

    def __init__(self, opener: Callable[[], AbstractContextManager[MemoryClient]],
                 k: int = REMEMBER_K, timeout: float = REMEMBER_TIMEOUT_S) -> None:
        self._opener = opener
        self.k = k
        self.timeout = timeout
        self._stack = ExitStack()
        self._client: MemoryClient | None = None

    def find(self, query: str) -> list[dict[str, Any]]:
        """The best past turns for ``query``; NoEmbeddingModel, MemoryUnavailable or
        BusNotRunning when search cannot run."""
        if self._client is None:
            self._client = self._stack.enter_context(self._opener())
        try:
            answer = self._client.call("search", timeout=self.timeout, query=query,
                                       k=self.k, kind="turn")
        except MemoryFault as fault:
            raise search_refused(fault) from None
        matches = [m for m in answer.get(proto.MATCHES) or [] if isinstance(m, dict)]
        if not matches:
            index_state(self._client)  # nothing, because search is off?
        return matches

    def lines(self, query: str) -> tuple[list[str], str | None]:
        """What /remember prints (each match: date, conversation, persona, excerpt) and
        the one notice when search cannot answer (then no lines)."""
        try:
            matches = self.find(query)
        except NoEmbeddingModel as error:
            return [], str(error)
        except (ServiceUnavailable, stackbus.BusNotRunning):
            return [], OFF_LINE
        except RunaError as error:
            return [], f"memory search failed: {error}"
        if not matches:
            return [], "nothing in your past conversations comes close to that"
        return [line for match in matches for line in _shown(match)], None

    def close(self) -> None:
        self._stack.close()
        self._client = None


def _shown(match: Mapping[str, Any]) -> list[str]:
    stamp = match.get("time")
    day = (datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%MZ")
           if isinstance(stamp, int | float) else "?")
    persona = f" ({match['persona']})" if match.get("persona") else ""
    excerpt = " ".join(str(match.get("text") or "").split())
    if len(excerpt) > EXCERPT_CHARS:
        excerpt = excerpt[:EXCERPT_CHARS - 1].rstrip() + "…"
    return [f"{day}  conversation {match.get('conversation') or '-'}{persona}", f"  {excerpt}"]
