"""A message longer than one bus envelope, sent to splinfer in pieces (``chat_part``).

The bus caps each envelope; a person pasting a long text into ``runa chat`` or ``runa ask``
must not meet that number. All but the last piece go ahead as ``chat_part`` queries under an
upload id, and the ``chat`` carries the last one (docs/protocol.md). The pieces live in
splinfer's memory and die with it, so the upload is made again before every resend of the
chat: it is the ``before_send`` of ``ServiceClient.request``.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from typing import Any

from runa.client import ServiceUnavailable
from runa.protocol.splinfer import request

#: Bytes of an envelope kept for its header and fields other than the payload's text.
REQUEST_MARGIN = 1024
#: How often a long message's upload is begun again when splinfer restarts during it.
UPLOAD_ATTEMPTS = 3

Payload = dict[str, Any]


def split_text(text: str, room: int) -> list[str]:
    """``text`` in pieces whose JSON encoding takes at most ``room`` bytes each."""
    pieces: list[str] = []
    start, used = 0, 2  # the quotes
    for index, char in enumerate(text):
        size = len(json.dumps(char).encode()) - 2
        if used + size > room and index > start:
            pieces.append(text[start:index])
            start, used = index, 2
        used += size
    pieces.append(text[start:])
    return pieces


def in_pieces(call: Callable[[Payload], Payload], payload: Payload,
              max_request_bytes: int | None) -> Callable[[Payload], Payload] | None:
    """The ``before_send`` that uploads ``payload``'s text ahead when one envelope cannot
    carry it (``call`` asks splinfer one query); None when it fits."""
    if not max_request_bytes:
        return None
    room = max_request_bytes - REQUEST_MARGIN
    if len(json.dumps(payload).encode()) <= room:
        return None
    return functools.partial(upload, call, room=room)


def upload(call: Callable[[Payload], Payload], payload: Payload, room: int) -> Payload:
    """Send all but the last piece of the text ahead, under a new upload id; the chat
    payload that ends it.

    A piece answered with fewer characters than were sent means splinfer restarted during
    the upload: it starts over.
    """
    pieces = split_text(payload["text"], room - len(json.dumps(
        {**payload, "text": "", "upload": "u" * 32}).encode()))
    for _ in range(UPLOAD_ATTEMPTS):
        upload_id, sent = uuid.uuid4().hex, 0
        for piece in pieces[:-1]:
            sent += len(piece)
            answer = call(request("chat_part", upload=upload_id, text=piece))
            if answer.get("received") != sent:
                break
        else:
            return {**payload, "text": pieces[-1], "upload": upload_id}
    raise ServiceUnavailable(f"splinfer restarted {UPLOAD_ATTEMPTS} "
                             "times while your message was being sent to it; send it again "
                             "(see 'runa status')")
