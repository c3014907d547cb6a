"""The OpenAI-compatible API as an ASGI app (Starlette; the APIs of Debian bookworm's 0.26).

The app does HTTP only: the key, the body's size and JSON, OpenAI's shapes (``wire``); what it
asks of the stack goes to a backend (``bus.BusBackend``, or a test's), whose blocking calls
run in threads of their own. A streaming client that goes away stops its stream, which
cancels the answer in splinfer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from runa.errors import RunaError
from runa.splinter.errors import MessageTooLarge
from runa.threadwell.wire import (
    ApiError,
    ChatRequest,
    Completion,
    embedding_list,
    finish_reason,
    from_runa_error,
    model_list,
    parse_chat,
    parse_embeddings,
)

#: How a streamed item reaches the event loop: a piece, the error that ended it, or the end.
_PIECE, _ERROR, _END = "piece", "error", "end"


class Keys(Protocol):
    def current(self) -> bytes: ...

    def recent(self) -> bool: ...

    def refreshed(self) -> bytes: ...


class Backend(Protocol):
    def models(self) -> list[str]: ...

    def chat(self, asked: ChatRequest, stop: threading.Event
             ) -> Iterator[tuple[dict[str, Any], bool]]: ...

    def embedding_models(self) -> list[str]: ...

    def embed(self, texts: list[str]) -> tuple[str, list[bytes], int]: ...


def error_response(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


class Api:
    """The routes, given the backend, the key's check and the body limit."""

    def __init__(self, backend: Backend, keys: Keys, max_body_bytes: int) -> None:
        self.backend = backend
        self.keys = keys
        self.max_body_bytes = max_body_bytes

    def app(self) -> Starlette:
        routes = [Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                  Route("/v1/models", self.models, methods=["GET"]),
                  Route("/v1/embeddings", self.embeddings, methods=["POST"])]
        return Starlette(routes=routes, exception_handlers={
            HTTPException: self._http_error, ApiError: self._api_error,
            RunaError: self._runa_error})

    # -- the routes ----------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        await self.authorize(request)
        names = await self._blocking(self.backend.models)
        names += await self._blocking(self.backend.embedding_models)
        return JSONResponse(model_list(names))

    async def chat_completions(self, request: Request) -> Response:
        await self.authorize(request)
        asked = parse_chat(await self.json_body(request))
        await self._known_model(asked.model)
        completion = Completion(asked.model, asked.conversation)
        stop = threading.Event()
        items = self._stream(lambda: self.backend.chat(asked, stop), stop)
        first = await items.__anext__()  # a refusal is an HTTP status, not half a stream
        if not asked.stream:
            pieces, item = [], first
            while True:
                pieces.append(item[0].get("text", ""))
                if item[1]:
                    return JSONResponse(completion.whole("".join(pieces), item[0]))
                item = await items.__anext__()
        return StreamingResponse(self._events(completion, first, items, asked.include_usage,
                                              stop),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def embeddings(self, request: Request) -> Response:
        await self.authorize(request)
        asked = parse_embeddings(await self.json_body(request))
        model, vectors, n_tokens = await self._blocking(lambda: self.backend.embed(asked.texts))
        if asked.model != model:
            raise ApiError(404, f"the embedding model {asked.model!r} does not exist; this "
                           f"stack embeds with {model!r}", param="model",
                           code="model_not_found")
        return JSONResponse(embedding_list(model, vectors, n_tokens, asked.base64))

    # -- what every route does -----------------------------------------------------------

    async def authorize(self, request: Request) -> None:
        """The bearer key, compared in constant time; nothing about the key is told. A key
        that differs from the one held, or a held key older than ``apikey.REFRESH_S``, makes
        it ask coven again (at most that often), so a rotated-out key stops working within
        seconds even if nobody uses the new one."""
        scheme, _, text = request.headers.get("authorization", "").partition(" ")
        given = text.strip().encode()
        held = (self.keys.current() if self.keys.recent()
                else await self._blocking(self.keys.refreshed))
        if scheme.lower() != "bearer" or not (
                hmac.compare_digest(given, held)
                or hmac.compare_digest(given, await self._blocking(self.keys.refreshed))):
            raise ApiError(401, "a missing or wrong API key (the key is shown by "
                           "'runa api-key show')", code="invalid_api_key")

    async def json_body(self, request: Request) -> Any:
        """The body as JSON: 413 past the limit (read no further), 400 if it is not JSON."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise self._too_large()
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ApiError(400, f"the request body is not JSON ({error})",
                           code="invalid_json") from None

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than {self.max_body_bytes} bytes "
                        "(threadwell.max_body_bytes)", code="request_too_large")

    async def _known_model(self, model: str) -> None:
        names = await self._blocking(self.backend.models)
        if model not in names:
            raise ApiError(404, f"the model {model!r} does not exist; this stack serves "
                           + (", ".join(names) or "no model yet"), param="model",
                           code="model_not_found")

    async def _blocking(self, call: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, call)

    async def _stream(self, produce: Callable[[], Iterator[tuple[dict[str, Any], bool]]],
                      stop: threading.Event) -> AsyncIterator[tuple[dict[str, Any], bool]]:
        """``produce``'s items, made in a thread of their own; leaving early (a client gone)
        sets ``stop``, which cancels the answer."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(kind: str, item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the loop is closed: the server is stopping
                stop.set()

        def pump() -> None:
            try:
                for item in produce():
                    put(_PIECE, item)
            except Exception as error:  # handed to the request, which answers with it
                put(_ERROR, error)
            finally:
                put(_END, None)

        threading.Thread(target=pump, name="threadwell-answer", daemon=True).start()
        try:
            while True:
                kind, item = await queue.get()
                if kind == _ERROR:
                    raise item
                if kind == _END:
                    return
                yield item
        finally:
            stop.set()

    async def _events(self, completion: Completion, first: tuple[dict[str, Any], bool],
                      items: AsyncIterator[tuple[dict[str, Any], bool]],
                      include_usage: bool, stop: threading.Event) -> AsyncIterator[bytes]:
        """Server-sent events as OpenAI sends them, ending with ``data: [DONE]``. A client
        that goes away cancels this generator: ``stop`` is set at once (no await), and the
        thread carrying the answer cancels it in splinfer."""
        yield _event(completion.chunk({"role": "assistant", "content": ""}))
        item: tuple[dict[str, Any], bool] | None = first
        try:
            while item is not None:
                payload, last = item
                text = payload.get("text", "")
                if text:
                    yield _event(completion.chunk({"content": text}))
                if last:
                    yield _event(completion.chunk({}, finish_reason(payload)))
                    if include_usage:
                        yield _event(completion.usage_chunk(payload))
                    break
                item = await items.__anext__()
        except (ApiError, RunaError) as error:  # mid-stream: the status is sent already
            api = error if isinstance(error, ApiError) else from_runa_error(error)
            yield _event(api.body())
        finally:
            stop.set()
        yield b"data: [DONE]\n\n"

    # -- errors in OpenAI's shape --------------------------------------------------------

    async def _http_error(self, _request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return error_response(ApiError(error.status_code, str(error.detail),
                                       code="not_found" if error.status_code == 404 else None))

    async def _api_error(self, _request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error_response(error)

    async def _runa_error(self, _request: Request, error: Exception) -> Response:
        if isinstance(error, MessageTooLarge):
            return error_response(ApiError(413, "the message does not fit one bus envelope",
                                           code="request_too_large"))
        assert isinstance(error, RunaError)
        return error_response(from_runa_error(error))


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"
