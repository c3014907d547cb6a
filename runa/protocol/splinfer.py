"""splinfer's requests (queue ``splinfer``; docs/protocol.md, "splinfer").

A client builds them with ``OPS[name].request(...)`` (or :func:`chat`), splinfer reads
them with ``OPS[name].read(...)``; the fields' rules are here, the sampling parameters'
in ``runa.protocol.params``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from runa.policy.sets import NAME as POLICY_NAME
from runa.protocol.names import conversation_id_problem
from runa.protocol.payloads import Field, Op

SERVICE = "splinfer"

_CONVERSATION = Field("conversation", "string", "the conversation's id, chosen by the client",
                      allowed="1-64 of A-Z a-z 0-9 _ . -")


def _upload_problem(value: str) -> str | None:
    return None if conversation_id_problem(value) is None else \
        "'upload' must be an id of 1 to 64 of A-Z a-z 0-9 _ . -"


def _index(field: str, what: str) -> Callable[[int], str | None]:
    return lambda value: None if value >= 0 else f"{field!r} must be {what} (an integer from 0)"


_CHECKS: Mapping[str, Callable[[Any], str | None]] = {
    "conversation": conversation_id_problem, "upload": _upload_problem,
    "persona": lambda value: None if value else
    "'persona' must be a persona's name (see the personas query)",
    "policy": lambda value: None if POLICY_NAME.match(value) else
    "'policy' must be a policy set's name: 1-64 of A-Z a-z 0-9 _ . -, starting with a "
    "letter or digit (see 'runa policy list')",
    "start": _index("start", "a message index"), "offset": _index("offset", "a character index"),
}


#: Texts one ``policy_check`` may judge (a client sends more in several requests).
MAX_CHECK_ITEMS = 64
#: Characters of one text ``policy_check`` judges (it runs in splinfer's loop).
MAX_CHECK_TEXT = 64 * 1024


def _items_problem(items: list[dict[str, Any]]) -> str | None:
    if not 1 <= len(items) <= MAX_CHECK_ITEMS:
        return f"'items' must hold 1 to {MAX_CHECK_ITEMS} texts"
    if not all(isinstance(item, dict) and isinstance(item.get("text"), str)
               for item in items):
        return "'items' must be objects {\"id\": ..., \"text\": \"...\"}"
    for item in items:
        if len(item["text"]) > MAX_CHECK_TEXT:
            return (f"item {str(item.get('id'))[:64]!r}: 'text' is longer than "
                    f"{MAX_CHECK_TEXT} characters (send it in parts)")
    return None


def _op(name: str, doc: str, *fields: Field,
        checks: Mapping[str, Callable[[Any], str | None]] | None = None) -> Op:
    return Op(SERVICE, name, doc, fields, {**_CHECKS, **(checks or {})})


OPS: Mapping[str, Op] = {op.name: op for op in (
    _op("chat", "answer a turn, streamed",
        Field("text", "string", "the user's turn", required=True),
        _CONVERSATION,
        Field("persona", "string", "a persona's name", default="splinfer.persona"),
        Field("system", "string", "replaces the persona's system prompt for this turn"),
        Field("policy", "string", "the policy set for this conversation from this turn on "
              "(docs/policy.md)", default="the conversation's, the persona's, policy.default",
              allowed="a set's name"),
        Field("params", "object", "sampling parameters under llama.cpp's names",
              default="the persona's", allowed="llama.cpp names (above)"),
        Field("upload", "string", "the pieces sent ahead with chat_part",
              allowed="as conversation"),
        checks={"text": lambda text: None if text.strip() else
                "chat needs a non-empty string 'text'"}),
    _op("chat_part", "one piece of a message too long for one envelope",
        Field("upload", "string", "the upload's id", required=True,
              allowed="as conversation"),
        Field("text", "string", "the piece", required=True)),
    _op("cancel", "end a running or waiting chat",
        Field("target", "string", "the id of the chat", required=True)),
    _op("status", "the model, the context and the queue"),
    _op("ps", "the loaded model and its memory, the conversations in the context and their "
        "sizes, threads, the last answers' speed"),
    _op("use_model", "switch to another chat model without a restart (the stack's owner; on "
        "a shared stack its administrator)",
        Field("model", "string", "the chat model", required=True,
              allowed="a path, a file in a models directory, a catalog name"),
        checks={"model": lambda value: None if value.strip() else
                "'model' must name a chat model (see 'runa models list')"}),
    _op("personas", "the personas splinfer knows"),
    _op("history", "a kept conversation's messages",
        replace(_CONVERSATION, required=True),
        Field("start", "integer", "the first message's index (paging)", allowed="0 or more"),
        Field("offset", "integer", "the first character of message start", default="0",
              allowed="0 or more")),
    _op("conversations", "the kept conversations, the latest used first",
        Field("prefix", "string", "only ids starting with it")),
    _op("forget", "delete a kept conversation",
        replace(_CONVERSATION, required=True)),
    _op("policy_check", "judge texts with the policy's tier 1 and the model's tokenizer",
        Field("items", "list of objects", "the texts: {\"id\": ..., \"text\": \"...\"}",
              required=True, allowed=f"1 to {MAX_CHECK_ITEMS}, each text at most "
              f"{MAX_CHECK_TEXT} characters"),
        Field("policy", "string", "the policy set (the lock does not apply: nobody is "
              "shown anything)", default="policy.default", allowed="a set's name"),
        Field("side", "string", "judge them as prompts or as answers", default="prompt",
              allowed="prompt, output"),
        checks={"items": _items_problem,
                "side": lambda value: None if value in ("prompt", "output") else
                "'side' must be prompt or output"}),
)}


def chat(text: str, *, conversation: str | None = None, persona: str | None = None,
         system: str | None = None, params: Mapping[str, Any] | None = None,
         upload: str | None = None, policy: str | None = None) -> dict[str, Any]:
    """A ``chat`` request (fields left None are not sent: splinfer's defaults apply)."""
    return OPS["chat"].request(text=text, conversation=conversation, persona=persona,
                               system=system, upload=upload, policy=policy,
                               params=None if params is None else dict(params))


def request(op: str, **fields: Any) -> dict[str, Any]:
    """The payload of request ``op`` (fields given as None are not sent)."""
    return OPS[op].request(**fields)
