"""splinfer's query payloads, checked once as they arrive (docs/protocol.md, "splinfer").

A payload that cannot be served as sent is refused right away with BAD_SCHEMA
naming the field, before it waits in the queue: a bad parameter, an unknown
persona, a malformed conversation id. The fields' rules are the wire contract's
(``runa.protocol.splinfer``), which the clients build their requests from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runa.protocol.params import ParamError, parse_params
from runa.protocol.payloads import PayloadError
from runa.protocol.splinfer import OPS
from runa.splinter import Envelope
from runa.splinter.errors import BadSchema


def bad(request: Envelope, message: str) -> BadSchema:
    return BadSchema(message, id=request.id, reply_to=request.reply_to, sender=request.sender)


def read(request: Envelope, name: str) -> Any:
    """Field ``name`` of the request, by its op's rules; BadSchema naming what is wrong.
    (Only for the ops splinfer answers: ``_dispatch`` refuses the others first.)"""
    try:
        return OPS[str(request.payload.get("op"))].read(request.payload, name)
    except PayloadError as error:
        raise bad(request, str(error)) from None


@dataclass
class ChatRequest:
    envelope: Envelope
    text: str
    conversation: str | None = None
    persona: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None

    @property
    def id(self) -> str:
        return self.envelope.id


def parse_chat(request: Envelope) -> ChatRequest:
    """The chat payload's fields; BadSchema naming the first bad one."""
    if not request.reply_to:
        raise BadSchema("chat needs 'reply_to': the channel the answer streams to",
                        id=request.id, sender=request.sender)
    text = read(request, "text")
    params = read(request, "params") or {}
    system = read(request, "system")
    try:
        parse_params(params, source="request params")
    except ParamError as error:
        raise bad(request, str(error)) from None
    persona = read(request, "persona")
    return ChatRequest(request, text, read(request, "conversation"), persona, system, params,
                       read(request, "policy"))


def conversation_field(request: Envelope) -> str:
    """The payload's required ``conversation`` id, checked; BadSchema if missing or bad."""
    return str(read(request, "conversation"))
