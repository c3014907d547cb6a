"""One request's answer on its reply channel, without ever holding up the decode loop.

Several answers are decoded together, so a client that stops reading must not
stall the others: sends never wait. Text that cannot go out yet (the reply
channel is full) stays here and goes with the next envelope; the final envelope
waits in the outbox until there is room. A reader that makes no room for
``timeout_s``, or whose channel disappears, is *gone*: its answer is abandoned.

Text is coalesced: the first piece goes at once (time to first token is what a
person feels), then at most one envelope per ``flush_s`` (waking a client for
every token would take CPU from the decode on a small machine, and 50 ms is
below what anyone reads at). The last envelope has ``eof`` and the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from runa.splinter import Envelope, Fault
from runa.splinter import envelope as env_mod
from runa.splinter.errors import Backpressure, ChannelNotFound, SplinterError

#: Text held back while the channel is full goes out in pieces of at most this many
#: characters, so no envelope outgrows the bus's envelope limit (12 KiB at worst, escaped).
MAX_PIECE = 2048


class ReplyStream:
    def __init__(
        self,
        request: Envelope,
        sender: Any,
        *,
        name: str,
        clock: Callable[[], float],
        flush_s: float,
        timeout_s: float,
    ) -> None:
        self.request = request
        self.sender = sender
        self.name = name
        self.clock = clock
        self.flush_s = flush_s
        self.timeout_s = timeout_s
        self.seq = 0
        self.unsent = ""
        self.last_flush = float("-inf")
        self.outbox: deque[Envelope] = deque()
        self.blocked_since: float | None = None
        self.closed = False
        self.gone: str | None = None
        """Why the reader is considered gone (None while it reads)."""

    @property
    def done(self) -> bool:
        """The final envelope is out (or the reader is gone)."""
        return self.gone is not None or (self.closed and not self.outbox)

    def text(self, piece: str) -> None:
        """Add answer text; it goes out now if a flush is due and nothing is waiting."""
        if self.closed or self.gone:
            return
        self.unsent += piece
        now = self.clock()
        while len(self.unsent) > MAX_PIECE:
            self._queue({"text": self.unsent[:MAX_PIECE]})
            self.unsent = self.unsent[MAX_PIECE:]
        if self.unsent and not self.outbox and now - self.last_flush >= self.flush_s:
            self._queue({"text": self.unsent})
            self.unsent, self.last_flush = "", now
            self.pump()

    def reading(self, n_tokens: int) -> None:
        """Say, before any text, that ``n_tokens`` of prompt are being evaluated first."""
        if not self.closed and not self.gone:
            self._queue({"text": "", "reading": n_tokens})
            self.pump()

    def finish(self, payload: dict[str, Any]) -> None:
        """Queue the final envelope: the remaining text and ``payload``."""
        if self.closed:
            return
        self._queue({"text": self.unsent, **payload}, eof=True)
        self.unsent = ""
        self.closed = True
        self.pump()

    def fail(self, code: Fault, message: str) -> None:
        """End the answer with an error envelope instead."""
        if self.closed:
            return
        self.outbox.clear()
        self.outbox.append(env_mod.fault(code, message, sender=self.name,
                                         to=self.request.sender, id=self.request.id))
        self.closed = True
        self.pump()

    def _queue(self, payload: dict[str, Any], eof: bool = False) -> None:
        self.outbox.append(env_mod.response(self.request, self.name, payload, seq=self.seq,
                                            eof=eof))
        self.seq += 1

    def pump(self) -> None:
        """Send what is waiting, in order, as far as the channel takes it."""
        while self.outbox and self.gone is None:
            try:
                self.sender.send(self.outbox[0])
            except Backpressure:
                now = self.clock()
                if self.blocked_since is None:
                    self.blocked_since = now
                elif now - self.blocked_since > self.timeout_s:
                    self.gone = f"{self.request.reply_to} full for {self.timeout_s:g} s"
                return
            except ChannelNotFound:
                self.gone = f"{self.request.reply_to} was closed"
                return
            except SplinterError as error:
                self.gone = f"cannot answer on {self.request.reply_to}: {error}"
                return
            self.outbox.popleft()
            self.blocked_since = None
