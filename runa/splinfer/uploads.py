"""Messages longer than one bus envelope: sent in pieces, and read back in pieces.

A message sent in pieces (``chat_part``) comes before its ``chat``.

The bus caps each envelope (``bus.envelope_max_bytes``); a person pasting a long text must
not meet that number. The client sends all but the last piece as ``chat_part`` queries
under an upload id, then the ``chat`` with the last piece and the same ``upload``; the chat
is then answered as if its text had come whole. The only limit left is the model's context,
checked in tokens when the prompt is built (PromptTooLongError). Pieces are only held in
memory, never logged, and an upload not finished within its time-to-live is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runa.splinfer.errors import words
from runa.splinfer.requests import bad, read
from runa.splinter import Envelope

#: More characters than this per context token cannot fit, whatever the tokenizer.
MAX_CHARS_PER_TOKEN = 16


@dataclass
class _Upload:
    sender: str
    started: float
    parts: list[str] = field(default_factory=list)
    chars: int = 0


class Uploads:
    """The unfinished uploads, by id; pieces kept in order."""

    def __init__(self, clock: Callable[[], float], ttl_s: float) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self.open: dict[str, _Upload] = {}

    def add(self, request: Envelope, max_chars: int) -> dict[str, Any]:
        """Keep one piece; the answer says how much has arrived. BadSchema when too long."""
        self._expire()
        upload_id, text = self._fields(request)
        upload = self.open.setdefault(upload_id, _Upload(request.sender, self.clock()))
        if upload.sender != request.sender:
            raise bad(request, f"upload {upload_id!r} belongs to another client")
        upload.parts.append(text)
        upload.chars += len(text)
        if upload.chars > max_chars:
            del self.open[upload_id]
            limit = max_chars // MAX_CHARS_PER_TOKEN
            raise bad(request, f"the message is too long for this model: more than "
                      f"{upload.chars} characters, and the context holds {limit} tokens "
                      f"(about {words(limit)} words). Put the text into a topic with 'runa "
                      "ingest FILE --topic NAME' and ask about it with '/rag on NAME' in "
                      "chat (or 'runa recall').")
        return {"upload": upload_id, "received": upload.chars}

    def complete(self, request: Envelope) -> None:
        """A ``chat`` naming an upload: its text becomes the pieces plus its own."""
        upload_id = request.payload.get("upload")
        if upload_id is None:
            return
        upload = self.open.pop(upload_id, None) if isinstance(upload_id, str) else None
        if upload is None or upload.sender != request.sender:
            raise bad(request, f"no upload {upload_id!r} (its pieces expired after "
                      f"{self.ttl_s:g} s, or were never sent); send the message again")
        text = request.payload.get("text")
        request.payload["text"] = "".join(upload.parts) + (text if isinstance(text, str)
                                                           else "")

    def _fields(self, request: Envelope) -> tuple[str, str]:
        return read(request, "upload"), read(request, "text")

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl_s
        for upload_id in [u for u, up in self.open.items() if up.started < cutoff]:
            del self.open[upload_id]


def history_page(messages: list[dict[str, str]], start: int, offset: int, room: int
                 ) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """The messages from ``start`` (its text from ``offset``) that fit in ``room`` bytes of
    JSON, and where the next page starts (message, character), None at the end.

    A message too long for a page on its own is cut; the cut piece says ``"more": true``
    and the next page goes on with the rest of its text.
    """
    page: list[dict[str, Any]] = []
    used = 2  # the list's brackets
    for index in range(start, len(messages)):
        message = messages[index]
        skip = offset if index == start else 0
        piece = {"role": message["role"], "content": message["content"][skip:]}
        size = len(json.dumps(piece).encode()) + 1
        if used + size <= room:
            page.append(piece)
            used += size
            continue
        if page:
            return page, (index, 0)
        overhead = len(json.dumps({**piece, "content": "", "more": True}).encode()) + 1
        fits = fit_prefix(piece["content"], room - used - overhead)
        page.append({**piece, "content": fits, "more": True})
        return page, (index, skip + len(fits))
    return page, None


def fit_prefix(text: str, room: int) -> str:
    """The longest start of ``text`` whose JSON string takes at most ``room`` bytes (at
    least one character, so a page always moves on)."""
    used, end = 2, 0
    for end, char in enumerate(text):
        used += len(json.dumps(char).encode()) - 2
        if used > room:
            return text[: max(1, end)]
    return text
