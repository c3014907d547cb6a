"""threadwell in a real stack (``runa up``, the default model): the official client, a
conversation continued across the API and ``runa chat``, the API key, loopback only, and a
stream whose client goes away cancelled in splinfer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import isolated_env, remove_segments, runa, wait_for

from runa.client import ServiceClient
from runa.components import load_config as load
from runa.paths import Paths
from runa.stackbus import connect

# Debian's python3, which runs the .deb's own suite, has no openai package.
openai = pytest.importorskip("openai")

CONTEXT = {"RUNA_SPLINFER_CTX_SIZE": "1024", "RUNA_SPLINFER_THREADS": "2",
           "RUNA_SPLINFER_BATCH_SIZE": "512"}

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def stack(real_model: Path, minilm_gguf: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[dict[str, str], int]]:
    root = tmp_path_factory.mktemp("api")
    port = free_port()
    env = {**isolated_env(root, threadwell=True), **CONTEXT,
           "RUNA_SPLINFER_MODEL": str(real_model), "RUNA_THREADWELL_PORT": str(port),
           "RUNA_TIETO_EMBEDDING_MODEL": str(minilm_gguf)}
    up = runa("up", "--detach", env=env, timeout=180)
    assert up.returncode == 0, up.stderr
    try:
        yield env, port
    finally:
        runa("down", env=env)
        remove_segments(env)


def api_key(env: dict[str, str]) -> str:
    shown = runa("api-key", "show", env=env)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.strip()


def api_client(stack: tuple[dict[str, str], int]) -> openai.OpenAI:
    env, port = stack
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key(env))


def exported(env: dict[str, str], conversation: str) -> list[dict[str, str]]:
    shown = runa("chat", "--export", conversation, "--format", "json", env=env)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["messages"]


def test_the_official_client_streams_and_does_not(stack) -> None:
    client = api_client(stack)
    model = client.models.list().data[0].id
    assert model == "SmolLM2-135M-Instruct.Q4_1"
    question = [{"role": "user", "content": "Write one sentence about the sea."}]
    whole = client.chat.completions.create(model=model, messages=question, temperature=0,
                                           max_tokens=24, seed=1)
    streamed = list(client.chat.completions.create(model=model, messages=question,
                                                   temperature=0, max_tokens=24, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert whole.choices[0].message.content == text  # greedy: the same answer both ways
    assert "sea" in text.lower()
    assert whole.choices[0].finish_reason in ("stop", "length") and whole.usage is not None
    assert 0 < whole.usage.completion_tokens <= 24
    assert whole.usage.prompt_tokens > 5
    assert len([c for c in streamed if c.choices and c.choices[0].delta.content]) > 3


def test_the_official_client_gets_embeddings_from_tieto_s_model(stack) -> None:
    client = api_client(stack)
    names = [m.id for m in client.models.list()]
    assert len(names) == 2 and names[0] == "SmolLM2-135M-Instruct.Q4_1"
    texts = ["The sailing boat is moored at the pier.", "A boat is tied up in the harbour.",
             "Three carrots and an onion make the soup."]
    answer = client.embeddings.create(model=names[1], input=texts)
    vectors = [d.embedding for d in answer.data]
    assert [len(v) for v in vectors] == [384] * 3
    assert all(abs(sum(x * x for x in v) - 1) < 1e-3 for v in vectors)  # unit length

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    many = client.embeddings.create(model=names[1], input=[f"text {n}" for n in range(11)])
    assert [d.index for d in many.data] == list(range(11))  # across two tieto requests


def test_a_conversation_goes_on_in_runa_chat_and_back(stack) -> None:
    env, _ = stack
    client = api_client(stack)
    model = client.models.list().data[0].id
    started = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "My name is Ada."}],
        temperature=0, max_tokens=8)
    conversation = started.model_extra["runa_conversation"]
    went_on = subprocess.run([sys.executable, "-m", "runa", "chat", "--conversation",
                              conversation, "--temp", "0", "-n", "8"],
                             input="What is my name?\n", env=env, capture_output=True,
                             text=True, timeout=120)
    assert went_on.returncode == 0, went_on.stderr
    messages = exported(env, conversation)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "My name is Ada."
    assert messages[2]["content"] == "What is my name?"

    other = "begun-in-chat"
    begun = subprocess.run([sys.executable, "-m", "runa", "chat", "--new", "--conversation",
                            other, "--temp", "0", "-n", "8"], input="I live by the sea.\n",
                           env=env, capture_output=True, text=True, timeout=120)
    assert begun.returncode == 0, begun.stderr
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Where do I live?"}],
        temperature=0, max_tokens=8, extra_body={"runa_conversation": other})
    assert answer.model_extra["runa_conversation"] == other
    messages = exported(env, other)
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "I live by the sea.", "Where do I live?"]


def test_the_key_is_needed_and_a_rotated_one_replaces_it(stack) -> None:
    env, port = stack
    old = api_key(env)
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="runa-wrong").models.list()
    rotated = runa("api-key", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new != old and new == api_key(env) and new.startswith("runa-")
    time.sleep(2.1)  # a wrong key asks coven again at most every 2 s
    assert openai.OpenAI(base_url=url, api_key=new).models.list().data
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key=old).models.list()


def listening(table: str) -> set[tuple[str, int]]:
    """The (address in hex, port) of every socket listening in /proc/net/``table``."""
    found = set()
    for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].rsplit(":", 1)
        if fields[3] == "0A":  # TCP_LISTEN
            found.add((address, int(port, 16)))
    return found


def test_nothing_listens_beyond_loopback(stack) -> None:
    _, port = stack
    ipv4 = {address for address, at in listening("tcp") if at == port}
    ipv6 = {address for address, at in listening("tcp6") if at == port}
    assert ipv4 == {"0100007F"}  # 127.0.0.1
    assert ipv6 <= {"00000000000000000000000001000000"}  # ::1 (absent without IPv6)


def test_a_stream_whose_client_goes_away_is_cancelled_in_splinfer(stack) -> None:
    env, port = stack
    started = time.time() - 1
    key = api_key(env)
    body = json.dumps({"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 900,
                       "messages": [{"role": "user", "content": "Count from 1 to 1000."}],
                       "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        seen = b""
        while seen.count(b'"content"') < 4:  # the answer is streaming
            seen += conn.recv(65536)
        assert splinfer_status(env)["busy"]
    wait_for(lambda: not splinfer_status(env)["busy"], 5,
             "splinfer to stop the answer nobody reads any more")
    wait_for(lambda: "(cancelled)" in said_since(env, started), 10,
             "splinfer to log the answer as cancelled")


def said_since(env: dict[str, str], since: float) -> str:
    """What the stack logged: the journal where there is one (the supervisor sends its
    components' lines there), and the supervisor's log file."""
    text = (Path(env["XDG_RUNTIME_DIR"]) / "runa/supervisor.log").read_text()
    if shutil.which("journalctl") is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        done = subprocess.run(["journalctl", "--no-pager", "-o", "cat", "--since", stamp],
                              capture_output=True, text=True, timeout=60)
        text += done.stdout if done.returncode == 0 else ""
    return text


def splinfer_status(env: dict[str, str]) -> dict[str, object]:
    config = load(Paths.for_stack(env["RUNA_STACK"], env), env)
    with connect(config, env["RUNA_STACK"]) as bus, \
            ServiceClient(bus, "splinfer", "test") as client:
        return client.call({"op": "status"})



def test_the_supervisor_keeps_the_sockets_across_a_restart(stack) -> None:
    env, port = stack
    client = api_client(stack)

    def threadwell_pid() -> int:
        status = json.loads(runa("status", "--json", env=env).stdout)
        found = next(c for c in status["components"] if c["name"] == "threadwell")
        return int(found["pid"] or 0) if found["state"] == "running" else 0

    before = threadwell_pid()
    assert before
    os.kill(before, signal.SIGKILL)
    wait_for(lambda: threadwell_pid() not in (0, before), 60, "threadwell to be restarted")
    assert client.models.list().data  # the same port, never closed in between
    assert {address for address, at in listening("tcp") if at == port} == {"0100007F"}
