"""OpenAI's request and answer shapes, mapped to and from the bus's (docs/threadwell.md).

Nothing here does I/O: a request body becomes a ``ChatRequest`` (or an ``ApiError`` naming the
field), and splinfer's answer pieces become OpenAI's completion, chunk and error objects.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runa.errors import RunaError
from runa.protocol.names import conversation_id_problem
from runa.protocol.params import ParamError, parse_params

#: OpenAI's sampling fields (and llama-server's extensions) under the bus's llama.cpp names.
SAMPLING_FIELDS: Mapping[str, str] = {
    "temperature": "temp",
    "top_p": "top_p",
    "max_tokens": "n_predict",
    "max_completion_tokens": "n_predict",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
}

#: splinfer's finish reasons as OpenAI names them.
FINISH_REASONS: Mapping[str, str] = {
    "stop": "stop", "length": "length", "context": "length", "cancelled": "stop",
    "policy": "content_filter",
}

_ROLES = ("system", "developer", "user", "assistant", "tool")


class ApiError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def from_runa_error(error: RunaError) -> ApiError:
    """A service's fault (or its absence) as the HTTP status a client acts on: its exit
    status says whose fault it was (runa.protocol.faults)."""
    status = {64: 400, 65: 400, 66: 404, 69: 503, 75: 503, 77: 403}.get(error.exit_code, 500)
    kind = "invalid_request_error" if status < 500 else "server_error"
    return ApiError(status, str(error), kind=kind,
                    code={503: "unavailable", 500: "internal_error"}.get(status))


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request, in the bus's words."""

    model: str
    text: str
    conversation: str
    new: bool
    stream: bool
    include_usage: bool = False
    system: str | None = None
    persona: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or OpenAI's list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
            isinstance(part, dict) and part.get("type") == "text"
            and isinstance(part.get("text"), str) for part in content):
        return "".join(part["text"] for part in content)
    raise ApiError(400, f"{where}.content must be a string or a list of text parts",
                   param=f"{where}.content")


def _string_field(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{name!r} must be a string", param=name)
    return value


def sampling(body: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling fields given, under llama.cpp's names, checked by the bus's own rules."""
    given: dict[str, Any] = {}
    names: dict[str, str] = {}
    for openai_name, runa_name in SAMPLING_FIELDS.items():
        value = body.get(openai_name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(400, f"{openai_name!r} must be a number", param=openai_name)
        if runa_name in given:
            raise ApiError(400, f"{openai_name!r} and {names[runa_name]!r} set the same "
                           "parameter; give one", param=openai_name)
        given[runa_name] = value
        names[runa_name] = openai_name
    try:
        _, checked = parse_params(given, source="request")
    except ParamError as error:
        name = names.get(error.name, error.name)
        raise ApiError(400, f"{name} = {error.value!r} is not allowed; {error.allowed}",
                       param=name, code="invalid_value") from None
    return {name: getattr(checked, name) for name in given}


def parse_chat(body: Any, new_id: Any = lambda: uuid.uuid4().hex) -> ChatRequest:
    """``body`` (a decoded JSON value) as a chat request, or ApiError naming the field.

    splinfer keeps a conversation (its messages and model state), so with ``runa_conversation``
    only the last message, the user's new turn, is sent. Without it a new conversation starts
    under a new id: a system message becomes its system prompt, and earlier turns (a client
    that sends the whole history) go before the new turn as a transcript.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required (see GET /v1/models)", param="model")
    n = body.get("n", 1)
    if n != 1:
        raise ApiError(400, "'n' must be 1: one answer per request", param="n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    options = body.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    persona = _string_field(body, "runa_persona")
    conversation = _string_field(body, "runa_conversation")
    if conversation is not None and (problem := conversation_id_problem(conversation)):
        raise ApiError(400, f"runa_conversation: {problem}", param="runa_conversation")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise ApiError(400, f"{where} must be an object with a role of "
                           + ", ".join(_ROLES), param=f"{where}.role")
        turns.append((message["role"], _text(message.get("content"), where)))
    role, text = turns[-1]
    if role != "user" or not text.strip():
        raise ApiError(400, "the last message must be the user's, and not empty",
                       param=f"messages[{len(turns) - 1}]")
    systems = [content for role, content in turns[:-1] if role in ("system", "developer")]
    system = "\n\n".join(systems) if systems else None
    if conversation is None:
        earlier = [f"{role}: {content}" for role, content in turns[:-1]
                   if role not in ("system", "developer")]
        if earlier:
            text = "\n\n".join([*earlier, f"user: {text}"])
    return ChatRequest(model=model, text=text, conversation=conversation or new_id(),
                       new=conversation is None, stream=stream, include_usage=include_usage,
                       system=system, persona=persona, params=sampling(body))


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    texts: list[str]
    base64: bool


def parse_embeddings(body: Any) -> EmbeddingRequest:
    """``body`` as an embeddings request: ``input`` a string or a list of strings."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required (see GET /v1/models)", param="model")
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(
            isinstance(text, str) and text for text in texts):
        raise ApiError(400, "'input' must be a non-empty string or a list of them (token "
                       "arrays are not taken)", param="input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be float or base64",
                       param="encoding_format")
    return EmbeddingRequest(model, texts, encoding == "base64")


def embedding_list(model: str, vectors: list[bytes], n_tokens: int,
                   as_base64: bool) -> dict[str, Any]:
    """OpenAI's embeddings answer; ``vectors`` are float32 little-endian rows."""
    data = [{"object": "embedding", "index": index,
             "embedding": base64.b64encode(row).decode() if as_base64
             else list(struct.unpack(f"<{len(row) // 4}f", row))}
            for index, row in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}


def _usage(final: Mapping[str, Any]) -> dict[str, int]:
    prompt = int(final.get("n_prompt") or 0)
    completion = int(final.get("n_gen") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


@dataclass
class Completion:
    """The answer being built: its id, creation time, model and conversation."""

    model: str
    conversation: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "runa_conversation": self.conversation}

    def whole(self, text: str, final: Mapping[str, Any]) -> dict[str, Any]:
        """The non-streamed answer."""
        return {**self._head("chat.completion"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish_reason(final)}],
                "usage": _usage(final), "runa_persona": final.get("persona")}

    def chunk(self, delta: Mapping[str, Any], finish: str | None = None) -> dict[str, Any]:
        """One streamed piece (``delta``: role and/or content)."""
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}]}

    def usage_chunk(self, final: Mapping[str, Any]) -> dict[str, Any]:
        """The last chunk when ``stream_options.include_usage``: no choices, the usage."""
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": _usage(final)}


def finish_reason(final: Mapping[str, Any]) -> str:
    return FINISH_REASONS.get(str(final.get("finish_reason")), "stop")


def model_list(models: list[str], created: int = 0) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                        "owned_by": "runa"} for name in models]}
