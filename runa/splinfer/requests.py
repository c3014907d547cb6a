"""splinfer's query payloads, checked once as they arrive (docs/protocol.md, "splinfer").

A payload that cannot be served as sent is refused right away with BAD_SCHEMA
naming the field, before it waits in the queue: a bad parameter, an unknown
persona, a malformed conversation id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runa.splinfer.conversations import check_id
from runa.splinfer.errors import ParamError
from runa.splinfer.params import parse_params
from runa.splinter import Envelope
from runa.splinter.errors import BadSchema


def bad(request: Envelope, message: str) -> BadSchema:
    return BadSchema(message, id=request.id, reply_to=request.reply_to, sender=request.sender)


@dataclass
class ChatRequest:
    envelope: Envelope
    text: str
    conversation: str | None = None
    persona: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.envelope.id


def parse_chat(request: Envelope) -> ChatRequest:
    """The chat payload's fields; BadSchema naming the first bad one."""
    payload = request.payload
    if not request.reply_to:
        raise BadSchema("chat needs 'reply_to': the channel the answer streams to",
                        id=request.id, sender=request.sender)
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise bad(request, "chat needs a non-empty string 'text'")
    params = payload.get("params") or {}
    system = payload.get("system")
    if not isinstance(params, dict) or (system is not None and not isinstance(system, str)):
        raise bad(request, "'params' must be an object and 'system' a string")
    try:
        parse_params(params, source="request params")
    except ParamError as error:
        raise bad(request, str(error)) from None
    persona = payload.get("persona")
    if persona is not None and (not isinstance(persona, str) or not persona):
        raise bad(request, "'persona' must be a persona's name (see the personas query)")
    return ChatRequest(request, text, conversation_field(request, required=False), persona,
                       system, params)


def conversation_field(request: Envelope, *, required: bool) -> str | None:
    """The payload's ``conversation`` id, checked; BadSchema if missing (when required) or bad."""
    value = request.payload.get("conversation")
    if value is None:
        if required:
            raise bad(request, f"{request.payload.get('op')} needs 'conversation': its id")
        return None
    try:
        return check_id(value)
    except ValueError as error:
        raise bad(request, str(error)) from None
