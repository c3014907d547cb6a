"""The API's HTTP side against a backend of the test's own: OpenAI's shapes, the official
client, the key, the limits and the errors, and a stream whose client goes away."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

try:
    import openai
except ImportError:  # Debian's python3, which runs the .deb's own suite, has no openai
    openai = None  # type: ignore[assignment]
import pytest
import uvicorn

from runa.errors import RunaError
from runa.threadwell.app import Api
from runa.threadwell.wire import ChatRequest

KEY = "runa-test-key"
MODEL = "tiny-model"
EMBEDDER = "tiny-embedder"

needs_openai = pytest.mark.skipif(openai is None, reason="the openai package is not installed")


class Keys:
    """The key held, and the one in the vault (``stored``), which a refresh takes."""

    def __init__(self) -> None:
        self.held = self.stored = KEY.encode()
        self.refreshes = 0
        self.fresh = True  # asked of coven within apikey.REFRESH_S

    def current(self) -> bytes:
        return self.held

    def recent(self) -> bool:
        return self.fresh

    def refreshed(self) -> bytes:
        self.refreshes += 1
        self.held = self.stored
        return self.held


class Backend:
    """Answers with the words of ``pieces``; records what it was asked and whether a stream
    was stopped (what the bus backend turns into splinfer's cancel)."""

    def __init__(self) -> None:
        self.asked: list[ChatRequest] = []
        self.pieces = ["Hello", ", ", "world", "."]
        self.hold = threading.Event()  # set: the answer waits after its first piece
        self.stopped = threading.Event()
        self.fault: RunaError | None = None

    def models(self) -> list[str]:
        return [MODEL]

    def embedding_models(self) -> list[str]:
        return [EMBEDDER]

    def embed(self, texts: list[str]) -> tuple[str, list[bytes], int]:
        self.embedded = list(texts)
        return EMBEDDER, [struct.pack("<3f", len(t), 0.5, -1.0) for t in texts], 2 * len(texts)

    def chat(self, asked: ChatRequest, stop: threading.Event
             ) -> Iterator[tuple[dict[str, Any], bool]]:
        self.asked.append(asked)
        if self.fault is not None:
            raise self.fault
        for index, piece in enumerate(self.pieces[:-1]):
            yield {"text": piece}, False
            while index == 0 and self.hold.is_set() and not stop.is_set():
                time.sleep(0.01)
            if stop.is_set():
                self.stopped.set()
                return
        yield {"text": self.pieces[-1], "finish_reason": "stop", "n_prompt": 7, "n_gen": 4,
               "conversation": asked.conversation, "persona": asked.persona or "default"}, True


@pytest.fixture
def api() -> Iterator[tuple[str, Backend, Keys]]:
    """The app served by uvicorn on a loopback port of its own, in a thread."""
    backend, keys = Backend(), Keys()
    app = Api(backend, keys, max_body_bytes=4096).app()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", backend, keys
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def post(url: str, body: bytes, key: str | None = KEY) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def chat_body(**fields: Any) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                       **fields}).encode()


@needs_openai
def test_the_official_client_gets_a_whole_answer_with_its_conversation(api) -> None:
    url, backend, _ = api
    client = openai.OpenAI(base_url=url, api_key=KEY)
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Hi"}],
        temperature=0, max_tokens=16, extra_body={"runa_persona": "tutor"})
    assert answer.choices[0].message.content == "Hello, world."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 4
    asked = backend.asked[0]
    assert (asked.text, asked.system, asked.persona) == ("Hi", "Be brief.", "tutor")
    assert asked.params == {"temp": 0.0, "n_predict": 16}
    assert answer.model_extra is not None
    assert answer.model_extra["runa_conversation"] == asked.conversation


@needs_openai
def test_the_official_client_streams_the_answer_as_it_comes(api) -> None:
    url, backend, _ = api
    client = openai.OpenAI(base_url=url, api_key=KEY)
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True}, extra_body={"runa_conversation": "abc-1"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 11
    assert {c.model_extra["runa_conversation"] for c in chunks if c.model_extra} == {"abc-1"}
    assert backend.asked[0].conversation == "abc-1" and not backend.asked[0].new


def test_a_continued_conversation_sends_only_the_new_turn_and_a_new_one_the_transcript(
        api) -> None:
    url, backend, _ = api
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
               {"role": "user", "content": "Again"}]
    assert post(f"{url}/chat/completions", json.dumps(
        {"model": MODEL, "messages": history, "runa_conversation": "c1"}).encode())[0] == 200
    assert post(f"{url}/chat/completions", json.dumps(
        {"model": MODEL, "messages": history}).encode())[0] == 200
    assert backend.asked[0].text == "Again"
    assert backend.asked[1].text == "user: Hi\n\nassistant: Hello.\n\nuser: Again"


@needs_openai
def test_the_models_are_listed(api) -> None:
    url, _, _ = api
    client = openai.OpenAI(base_url=url, api_key=KEY)
    assert [m.id for m in client.models.list()] == [MODEL, EMBEDDER]


@needs_openai
@pytest.mark.parametrize("key", [None, "runa-wrong", "", KEY + "x"])
def test_a_missing_or_wrong_key_is_401_and_tells_nothing_of_the_key(api, key) -> None:
    url, backend, _ = api
    status, body = post(f"{url}/chat/completions", chat_body(), key=key)
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"
    assert KEY not in json.dumps(body) and "runa-test" not in json.dumps(body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert backend.asked == []
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="runa-wrong").models.list()


def test_a_wrong_key_asks_for_the_key_again_so_a_rotated_one_works(api) -> None:
    url, _, keys = api
    keys.stored = b"runa-rotated"
    assert post(f"{url}/chat/completions", chat_body(), key="runa-rotated")[0] == 200
    assert keys.refreshes == 1
    assert post(f"{url}/chat/completions", chat_body(), key="runa-rotated")[0] == 200
    assert post(f"{url}/chat/completions", chat_body(), key=KEY)[0] == 401


def test_after_a_rotation_the_old_key_is_refused_once_the_held_one_is_stale(api) -> None:
    """Nobody needs to use the new key first: a key held longer than apikey.REFRESH_S is
    asked of coven again before it lets a request in."""
    url, _, keys = api
    keys.stored = b"runa-rotated"  # `runa api-key rotate` because the old one leaked
    assert post(f"{url}/chat/completions", chat_body(), key=KEY)[0] == 200  # still fresh
    keys.fresh = False
    assert post(f"{url}/chat/completions", chat_body(), key=KEY)[0] == 401
    assert keys.refreshes >= 1


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    (b"{not json", 400, None, "invalid_json"),
    (b"[1, 2]", 400, None, None),
    (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "Hi"}]}).encode(),
     404, "model", "model_not_found"),
    (chat_body(temperature=-1), 400, "temperature", "invalid_value"),
    (chat_body(top_p=-1), 400, "top_p", "invalid_value"),
    (chat_body(max_tokens="many"), 400, "max_tokens", None),
    (chat_body(n=2), 400, "n", None),
    (chat_body(runa_conversation="no spaces allowed"), 400, "runa_conversation", None),
    (json.dumps({"model": MODEL, "messages": []}).encode(), 400, "messages", None),
    (json.dumps({"model": MODEL, "messages": [{"role": "assistant", "content": "x"}]}).encode(),
     400, "messages[0]", None),
    (b'{"model": "' + b"x" * 5000 + b'"}', 413, None, "request_too_large"),
])
def test_bad_input_is_answered_in_openais_error_shape(api, body, status, param, code) -> None:
    url, backend, _ = api
    got, answer = post(f"{url}/chat/completions", body)
    assert got == status, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == param
    assert answer["error"]["code"] == code
    assert backend.asked == []


def test_a_refusal_of_the_service_is_a_status_not_half_a_stream(api) -> None:
    url, backend, _ = api
    from runa.client import ServiceUnavailable
    backend.fault = ServiceUnavailable("the inference service (splinfer) is not running")
    status, body = post(f"{url}/chat/completions", chat_body(stream=True))
    assert status == 503
    assert "not running" in body["error"]["message"]


def test_an_unknown_route_is_404_in_the_same_shape(api) -> None:
    url, _, _ = api
    request = urllib.request.Request(f"{url}/nothing", headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 404
    assert json.loads(raised.value.read())["error"]["code"] == "not_found"


def test_a_streaming_client_that_goes_away_stops_the_answer(api) -> None:
    url, backend, _ = api
    backend.hold.set()
    host, port = url.split("//")[1].split("/")[0].split(":")
    body = chat_body(stream=True)
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        seen = b""
        while b"Hello" not in seen:  # the stream has begun
            seen += conn.recv(65536)
    assert backend.stopped.wait(5), "the answer went on after its client left"


@needs_openai
def test_the_official_client_gets_embeddings_as_floats_and_as_base64(api) -> None:
    url, backend, _ = api
    client = openai.OpenAI(base_url=url, api_key=KEY)
    answer = client.embeddings.create(model=EMBEDDER, input=["one", "three"],
                                      encoding_format="float")
    assert [d.embedding for d in answer.data] == [[3.0, 0.5, -1.0], [5.0, 0.5, -1.0]]
    assert answer.model == EMBEDDER and answer.usage.prompt_tokens == 4
    assert backend.embedded == ["one", "three"]
    packed = client.embeddings.create(model=EMBEDDER, input="four")  # base64 on the wire
    assert packed.data[0].embedding == [4.0, 0.5, -1.0]


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "other", "input": "x"}, 404, "model"),
    ({"model": EMBEDDER, "input": []}, 400, "input"),
    ({"model": EMBEDDER, "input": [[1, 2, 3]]}, 400, "input"),
    ({"model": EMBEDDER, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
])
def test_bad_embedding_requests_are_answered_in_openais_error_shape(api, body, status,
                                                                   param) -> None:
    url, _, _ = api
    got, answer = post(f"{url}/embeddings", json.dumps(body).encode())
    assert got == status and answer["error"]["param"] == param


def test_a_message_larger_than_one_bus_envelope_is_413(api) -> None:
    url, backend, _ = api
    from runa.splinter.errors import MessageTooLarge
    backend.fault = MessageTooLarge(40000, 32768)
    status, body = post(f"{url}/chat/completions", chat_body())
    assert status == 413 and body["error"]["code"] == "request_too_large"
