"""Requests to a service that crashes or hangs: kept in its queue, answered by the next one.

The stack runs under Runa's own supervisor (``runa up``) on the tiny model; splinfer is
SIGKILLed or frozen (SIGSTOP, until its watchdog fires) while questions wait for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import isolated_env, remove_segments, runa, wait_for

from runa.chat.params import SessionParams
from runa.chat.session import ChatSession
from runa.client import ServiceClient
from runa.splinter import Bus
from runa.splinter import envelope as env_mod
from runa.splinter.bus import EnvelopeSender
from runa.testing.tiny_gguf import write_tiny_gguf

# A context large enough for a long answer: a stream that is still running when killed.
CONTEXT = {"RUNA_SPLINFER_CTX_SIZE": "4096", "RUNA_SPLINFER_THREADS": "1",
           "RUNA_SPLINFER_BATCH_SIZE": "512", "RUNA_LOG_TARGET": "stderr"}
# A second failure in a row is restarted after this backoff: the window a restart takes.
RESTART_DELAY_S = 4


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A started stack (keeper, splinfer, …) of this test's own; stopped afterwards."""
    yield from started_stack(tmp_path, write_tiny_gguf(tmp_path / "tiny.gguf", endless=True),
                             {})


@pytest.fixture
def small_envelopes(tmp_path: Path) -> Iterator[dict[str, str]]:
    """As ``stack``, with envelopes of 4 KiB: a long message is sent in pieces (chat_part)."""
    model = write_tiny_gguf(tmp_path / "tiny.gguf", context_length=8192, endless=True)
    yield from started_stack(tmp_path, model, {"RUNA_BUS_ENVELOPE_MAX_BYTES": "4096",
                                               "RUNA_SPLINFER_CTX_SIZE": "8192"})


def started_stack(tmp_path: Path, model: Path, extra: dict[str, str]
                  ) -> Iterator[dict[str, str]]:
    env = {**isolated_env(tmp_path), **CONTEXT, "RUNA_SPLINFER_MODEL": str(model),
           "RUNA_COMPONENTS_SPLINFER_WATCHDOG_SEC": "2",
           "RUNA_GILGUL_BACKOFF_INITIAL_S": str(RESTART_DELAY_S), **extra}
    env["_LOG"] = str(tmp_path / "run/runa/supervisor.log")
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    yield env
    runa("down", env=env)
    remove_segments(env)


def splinfer(env: dict[str, str]) -> dict:
    status = json.loads(runa("status", "--json", env=env).stdout)
    return next(c for c in status["components"] if c["name"] == "splinfer")


def ask(env: dict[str, str], question: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runa", "ask", "--temp", "0", "-n", "4",
                             *extra, question], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_into_backoff(env: dict[str, str]) -> tuple[int, float]:
    """SIGKILL splinfer twice: the second restart waits out the backoff (RESTART_DELAY_S).

    Returns the pid killed last and when (monotonic)."""
    first = splinfer(env)["pid"]
    os.kill(first, signal.SIGKILL)
    back = wait_for(lambda: (c := splinfer(env))["pid"] != first and c["state"] == "running"
                    and c, 30, "splinfer's first restart")
    pid = back["pid"]  # type: ignore[index]
    os.kill(pid, signal.SIGKILL)
    return pid, time.monotonic()


def test_questions_sent_while_splinfer_restarts_are_answered_by_the_next_one(
        stack: dict[str, str]) -> None:
    """Issue 15 #1 and issue 16: nothing sent to a SIGKILLed splinfer is lost, and `runa ask`
    waits for the restart instead of telling the person to start Runa."""
    pid, killed = kill_into_backoff(stack)
    asked = ask(stack, "at once", "--timeout", "30")
    chat = subprocess.Popen([sys.executable, "-m", "runa", "chat", "--new", "--timeout", "30",
                             "-n", "4"], env=stack, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    main = f"/dev/shm/runa-{stack['RUNA_STACK']}-main"
    with Bus.open(main) as bus:
        replies = bus.queue("test.crash")
        time.sleep(0.05)
        queries = [env_mod.query("test", "splinfer", {"op": "chat", "text": f"question {n}",
                                                      "params": {"n_predict": 4, "temp": 0}},
                                 reply_to="test.crash", ttl_ms=30_000) for n in range(3)]
        for query in queries:
            bus.sender("splinfer").send(query)
        answered: dict[str, float] = {}
        deadline = time.monotonic() + 40
        while len(answered) < 3 and time.monotonic() < deadline:
            reply = replies.recv(timeout=1)
            if reply is not None and reply.eof:
                assert reply.type == "response", reply.payload
                answered[reply.id] = time.monotonic() - killed
        replies.close()
    out, err = asked.communicate(timeout=60)
    assert (asked.returncode, err) == (0, ""), err
    assert out.strip(), "an empty answer"
    out, err = chat.communicate("hello\n", timeout=60)
    assert chat.returncode == 0 and "new conversation" in err, err
    assert out.strip(), "an empty answer"
    assert sorted(answered) == sorted(q.id for q in queries), "questions were lost"
    assert splinfer(stack)["pid"] != pid
    log = Path(stack["_LOG"]).read_text()
    assert "reaped queue 'splinfer'" not in log
    print("answered", ", ".join(f"{t:.2f}" for t in sorted(answered.values())),
          f"s after the SIGKILL (restart delay {RESTART_DELAY_S} s)")


def cut_by_a_crash(env: dict[str, str], message: str, name: str
                   ) -> tuple[int, str, str, float, str]:
    """Chat ``message`` and SIGKILL splinfer once the answer began: (pid killed, stdout,
    stderr, seconds from the kill to the end, conversation).

    The stack's model never ends a turn by itself (``endless``): the answer runs to its
    1500 tokens, seconds on the tiny model, so the SIGKILL lands while it streams. Were the
    whole answer out first, the try would test nothing; it is made again, in a
    conversation of its own (three tries at most, or the test fails and says why).
    """
    tries: list[str] = []
    for attempt in range(3):
        conversation = f"{name}{attempt}"
        # Asked before the message goes: `runa status` is a process of its own, slow on a
        # loaded machine, and the answer must not run on while it starts.
        pid = splinfer(env)["pid"]
        chat = subprocess.Popen(
            [sys.executable, "-m", "runa", "chat", "--new", "--conversation", conversation,
             "--timeout", "30", "-n", "1500", "--temp", "0"],
            env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write(message + "\n")
        chat.stdin.flush()
        assert chat.stdout.read(1), "no answer began"
        os.kill(pid, signal.SIGKILL)
        cut = time.monotonic()
        out, err = chat.communicate(timeout=120)
        took = time.monotonic() - cut
        assert chat.returncode == 0, err
        if "restarted while answering" in err:
            return pid, out, err, took, conversation
        tries.append(f"{len(out)} characters, all out {took:.2f} s after the SIGKILL")
        wait_for(lambda pid=pid: splinfer(env).get("pid") not in (None, pid), 30,
                 "the next splinfer")
    raise AssertionError("each answer was complete before its SIGKILL landed: "
                         + "; ".join(tries))


def test_an_answer_cut_by_a_crash_is_asked_again_and_the_turn_is_kept(
        stack: dict[str, str]) -> None:
    """The client notices its answer's process died, asks the next one: the turn is kept."""
    pid, out, err, took, conversation = cut_by_a_crash(stack, "tell me a very long story",
                                                       "cut")
    assert (f"the inference service (splinfer) restarted while answering (pid {pid} died); "
            "the answer was cut; asking again") in err
    assert took < 25, f"{took:.1f} s: the client waited for its timeout"
    history = subprocess.run([sys.executable, "-m", "runa", "chat", "--conversation",
                              conversation],
                             input="/history\n", env=stack, capture_output=True, text=True,
                             timeout=60)
    assert history.returncode == 0, history.stderr
    # The turn is kept once, with the answer of the incarnation that answered it in full,
    # the one the person saw last.
    assert history.stdout.count("tell me a very long story") == 1, history.stdout
    assert history.stdout.count("assistant:") == 1, history.stdout
    answer = history.stdout.split("assistant:", 1)[1].strip()
    assert answer and out.rstrip().endswith(answer)
    print(f"the cut answer was complete again {took:.2f} s after the SIGKILL")


# 9000 characters: with 4 KiB envelopes, two pieces go ahead (chat_part) of the chat.
LONG_MESSAGE = " ".join(f"w{i % 10}" for i in range(3000))


def exported(env: dict[str, str], conversation: str) -> list[dict[str, str]]:
    """The conversation's messages as splinfer keeps them."""
    export = runa("chat", "--export", conversation, "--format", "json", env=env)
    assert export.returncode == 0, export.stderr
    return json.loads(export.stdout)["messages"]


def test_a_long_message_whose_answer_is_cut_by_a_crash_is_answered_by_the_next_one(
        small_envelopes: dict[str, str]) -> None:
    """Its pieces died with the process that held them: they are sent again."""
    env = small_envelopes
    pid, out, err, _, conversation = cut_by_a_crash(env, LONG_MESSAGE, "long-cut")
    assert (f"the inference service (splinfer) restarted while answering (pid {pid} died); "
            "the answer was cut; asking again") in err
    assert out.strip(), "an empty answer"
    messages = exported(env, conversation)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == LONG_MESSAGE


class CrashingBus:
    """The stack's bus, but splinfer is SIGKILLed (and gone) just before the client sends
    the envelope ``crash_before`` picks: a crash at a chosen point of the protocol."""

    def __init__(self, bus: Bus, env: dict[str, str],
                 crash_before: Callable[[env_mod.Envelope], bool]) -> None:
        self.bus = bus
        self.env = env
        self.crash_before = crash_before
        self.killed: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    def sender(self, name: str) -> CrashingSender:
        return CrashingSender(self, self.bus.sender(name))

    def crash(self) -> None:
        pid = splinfer(self.env)["pid"]
        os.kill(pid, signal.SIGKILL)
        self.killed.append(pid)
        wait_for(lambda: not self.bus.queue_owner("splinfer").alive, 10,  # type: ignore[union-attr]
                 f"splinfer (pid {pid}) to die")


class CrashingSender:
    def __init__(self, bus: CrashingBus, sender: EnvelopeSender) -> None:
        self.bus = bus
        self.sender = sender

    def send(self, envelope: env_mod.Envelope) -> None:
        if not self.bus.killed and self.bus.crash_before(envelope):
            self.bus.crash()
        self.sender.send(envelope)


def ask_long(env: dict[str, str], conversation: str,
             crash_before: Callable[[env_mod.Envelope], bool]) -> tuple[str, list[int]]:
    """LONG_MESSAGE asked as ``runa chat`` asks it, splinfer crashing where chosen; the
    answer and the pids killed."""
    with Bus.open(f"/dev/shm/runa-{env['RUNA_STACK']}-main") as real:
        bus = CrashingBus(real, env, crash_before)
        with ServiceClient(bus, "splinfer", "test") as client:  # type: ignore[arg-type]
            session = ChatSession(client, conversation, timeout=30,
                                  params=SessionParams({"n_predict": 4, "temp": 0}))
            session.max_request_bytes = real.geometry.max_envelope
            answer = "".join(session.ask(LONG_MESSAGE))
    return answer, bus.killed


def test_a_long_message_whose_process_died_after_its_pieces_is_answered_by_the_next_one(
        small_envelopes: dict[str, str]) -> None:
    """The pieces reached the process, the chat was still queued when it died."""
    answer, killed = ask_long(small_envelopes, "long-queued",
                              lambda envelope: envelope.payload.get("op") == "chat")
    assert killed, "splinfer was not killed"
    assert answer.strip(), "an empty answer"
    messages = exported(small_envelopes, "long-queued")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == LONG_MESSAGE
    assert splinfer(small_envelopes)["pid"] not in killed


def test_a_long_message_whose_process_died_between_its_pieces_is_kept_whole(
        small_envelopes: dict[str, str]) -> None:
    """The first piece died with the process: the next one must not answer the rest alone."""
    parts: list[str] = []

    def second_part(envelope: env_mod.Envelope) -> bool:
        if envelope.payload.get("op") == "chat_part":
            parts.append(envelope.id)
        return len(parts) == 2

    answer, killed = ask_long(small_envelopes, "long-between", second_part)
    assert killed, "splinfer was not killed"
    assert answer.strip(), "an empty answer"
    messages = exported(small_envelopes, "long-between")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == LONG_MESSAGE


def test_a_question_sent_to_a_frozen_splinfer_is_answered_after_its_watchdog_kill(
        stack: dict[str, str]) -> None:
    pid = splinfer(stack)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        asked = ask(stack, "are you there", "--timeout", "40")
        out, err = asked.communicate(timeout=90)
    finally:
        if Path(f"/proc/{pid}").exists():  # not killed: let it go on (and be stopped)
            os.kill(pid, signal.SIGCONT)
    assert (asked.returncode, err) == (0, ""), err
    assert out.strip()
    assert splinfer(stack)["pid"] != pid


def query_bytes(ttl_ms: int, *, ts: str, reply_to: str) -> bytes:
    return json.dumps({"id": env_mod.uuid7(), "ts": ts, "from": "test", "to": "splinfer",
                       "type": "query", "payload": {"op": "status"}, "reply_to": reply_to,
                       "ttl_ms": ttl_ms}).encode()


def test_an_expired_query_is_answered_ttl_expired_and_a_huge_ttl_is_refused(
        stack: dict[str, str]) -> None:
    """Issue 15 #11 and the ``ttl_ms`` 2**54 of #12."""
    main = f"/dev/shm/runa-{stack['RUNA_STACK']}-main"
    with Bus.open(main) as bus:
        replies = bus.queue("test.ttl")
        to_splinfer = bus.sender("splinfer")
        long_ago = env_mod.rfc3339(time.time_ns() - 10 * 10**9)
        to_splinfer.send_bytes(query_bytes(2000, ts=long_ago, reply_to="test.ttl"))
        answer = replies.recv(timeout=20)
        assert answer is not None and answer.type == "error"
        assert answer.payload["code"] == 1001 and answer.payload["name"] == "TTL_EXPIRED"
        assert "longer than its ttl_ms (2000)" in answer.payload["message"]
        to_splinfer.send_bytes(query_bytes(60_000, ts=env_mod.rfc3339(), reply_to="test.ttl"))
        answer = replies.recv(timeout=20)
        assert answer is not None and answer.type == "response" and "model" in answer.payload
        to_splinfer.send_bytes(query_bytes(2**54, ts=env_mod.rfc3339(), reply_to="test.ttl"))
        answer = replies.recv(timeout=20)
        assert answer is not None and answer.payload["name"] == "BAD_SCHEMA"
        assert answer.payload["message"] == \
            f"field 'ttl_ms' is {2**54}; at most 86400000 (one day)"
        replies.close()
    wait_for(lambda: splinfer(stack)["state"] == "running", 5, "splinfer to keep running")
