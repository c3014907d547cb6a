"""Each API request carried over the bus: splinfer answers chats and names its model.

One ``Bus`` serves every request (threads may share it); each request has a
``ServiceClient`` of its own (its own reply queue), made and closed in the thread that
carries it. A stream stops, and splinfer is told to cancel it, when its ``stop`` is set.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runa.client import ServiceClient
from runa.errors import RunaError
from runa.protocol import tieto
from runa.protocol.splinfer import chat, request
from runa.splinter import Bus
from runa.threadwell.wire import ChatRequest

#: The name each request's reply queue starts with (``threadwell.<pid>.<random>``).
CLIENT_NAME = "threadwell"


class BusBackend:
    """What the app asks of the stack, over its main bus (opened when first needed: under
    systemd the service may start before the keeper made the bus)."""

    def __init__(self, open_bus: Callable[[], Bus], timeout: float) -> None:
        self._open_bus = open_bus
        self._bus: Bus | None = None
        self._lock = threading.Lock()
        self.timeout = timeout
        self.embedding_model = ""  # known once tieto has embedded for the API

    def bus(self) -> Bus:
        with self._lock:
            if self._bus is None:
                self._bus = self._open_bus()
            return self._bus

    def close(self) -> None:
        with self._lock:
            if self._bus is not None:
                self._bus.close()
                self._bus = None

    def models(self) -> list[str]:
        """The loaded chat model's name (its file's name without .gguf)."""
        with ServiceClient(self.bus(), "splinfer", CLIENT_NAME) as client:
            client.check_running()
            status = client.call(request("status"), idle_timeout=self.timeout)
        path = status.get("model")
        return [Path(path).stem] if isinstance(path, str) and path else []

    def embedding_models(self) -> list[str]:
        """tieto's embedding model's name, learnt from its first embedding (one word, the
        first time: tieto loads its model on first need); none while tieto is not running."""
        if not self.embedding_model:
            try:
                self.embed(["model"])
            except RunaError:
                return []
        return [self.embedding_model]

    def embed(self, texts: list[str]) -> tuple[str, list[bytes], int]:
        """tieto's embedding model's name, the vectors of ``texts`` (float32, little-endian)
        and the word-pieces read, asked ``tieto.MAX_EMBED_TEXTS`` texts at a time."""
        vectors: list[bytes] = []
        n_tokens, model = 0, ""
        with ServiceClient(self.bus(), "tieto", CLIENT_NAME) as client:
            client.check_running()
            for start in range(0, len(texts), tieto.MAX_EMBED_TEXTS):
                answer = client.call(tieto.request(
                    "embed", texts=texts[start:start + tieto.MAX_EMBED_TEXTS]),
                    idle_timeout=self.timeout)
                vectors += [base64.b64decode(row) for row in answer["vectors"]]
                n_tokens += int(answer.get("n_tokens") or 0)
                model = str(answer["model"])
        self.embedding_model = model
        return model, vectors, n_tokens

    def chat(self, asked: ChatRequest, stop: threading.Event
             ) -> Iterator[tuple[dict[str, Any], bool]]:
        """splinfer's answer: (payload, last) for each envelope, until the last one or
        until ``stop`` is set (the request is then cancelled in splinfer)."""
        payload = chat(asked.text, conversation=asked.conversation, persona=asked.persona,
                       system=asked.system, params=asked.params or None)
        with ServiceClient(self.bus(), "splinfer", CLIENT_NAME) as client:
            client.check_running()
            for envelope in client.request(payload, idle_timeout=self.timeout, stop=stop):
                yield envelope.payload, bool(envelope.eof)
