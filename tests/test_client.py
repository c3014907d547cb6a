"""ServiceClient against a real bus segment, with the service played by a thread of the test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from runa.client import AnswerCut, ServiceClient, ServiceUnavailable
from runa.splinter import Bus, Geometry, create_segment
from runa.splinter import envelope as env_mod
from runa.splinter.errors import TtlExpired
from runa.stackbus import RecentRequests, health_key, read_requests


@pytest.fixture
def bus_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="runa-test-", dir="/dev/shm")
    path = os.path.join(directory, "main")
    create_segment(path, Geometry(slots=64, channels=8))
    try:
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def beat(bus: Bus, pid: int, incarnation: int) -> None:
    bus.set(health_key("svc"), json.dumps({"pid": pid, "incarnation": incarnation,
                                           "ts_mono_ns": 0, "status": "ready"}))


def serve_once(path: str, act: Callable[[Bus, env_mod.Envelope], None]) -> threading.Thread:
    """Take one query off the 'svc' queue (as the service would) and ``act`` on it."""
    bus = Bus.open(path)
    queue = bus.queue("svc")

    def run() -> None:
        try:
            query = queue.recv(timeout=5)
            assert query is not None
            act(bus, query)
        finally:
            bus.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_request_lost_with_a_restarted_service_ends_with_ask_again(bus_path: str) -> None:
    # The old incarnation takes the query and dies; a new one beats but never heard of it.
    thread = serve_once(bus_path, lambda bus, _query: beat(bus, 200, 2))
    with Bus.open(bus_path) as bus, ServiceClient(bus, "svc", "test") as client:
        beat(bus, 100, 1)
        outcome: list[BaseException] = []

        def ask() -> None:
            try:
                next(client.request({"op": "chat"}, idle_timeout=0.3))
            except BaseException as error:  # handed to the test thread
                outcome.append(error)

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        asker.join(10)
        assert not asker.is_alive(), "the client still waits for an answer that cannot come"
        assert isinstance(outcome[0], ServiceUnavailable)
        assert "restarted" in str(outcome[0]) and "ask again" in str(outcome[0])
    thread.join(5)


def test_a_quiet_service_still_beating_as_itself_is_waited_for(bus_path: str) -> None:
    def answer_late(bus: Bus, query: env_mod.Envelope) -> None:
        time.sleep(1.5)  # well past idle_timeout: a long prompt being read
        bus.sender(query.reply_to).send(env_mod.response(query, "svc", {"text": "late"}, eof=True))

    thread = serve_once(bus_path, answer_late)
    with Bus.open(bus_path) as bus, ServiceClient(bus, "svc", "test") as client:
        beat(bus, 100, 1)
        assert client.call({"op": "chat"}, idle_timeout=0.3) == {"text": "late"}
    thread.join(5)


def test_a_service_without_heartbeat_ends_the_wait(bus_path: str) -> None:
    thread = serve_once(bus_path, lambda bus, _query: bus.unset(health_key("svc")))
    with Bus.open(bus_path) as bus, ServiceClient(bus, "svc", "test") as client:
        beat(bus, 100, 1)
        with pytest.raises(ServiceUnavailable, match="no heartbeat"):
            next(client.request({"op": "chat"}, idle_timeout=0.3))
    thread.join(5)


def test_a_short_timeout_leaves_a_busy_service_time_to_serve_the_query(bus_path: str) -> None:
    """The service beats but is busy for a second before it reads the queue: a client
    waiting for 0.1 s of silence is answered, not refused TTL_EXPIRED."""
    def serve_when_free() -> None:
        with Bus.open(bus_path) as bus:
            queue = bus.queue("svc", service=True)
            beat(bus, os.getpid(), 1)
            time.sleep(1.0)  # another request's answer

            def expired(query: env_mod.Envelope, error: TtlExpired) -> None:
                bus.sender(query.reply_to).send(env_mod.error_reply(query, error, sender="svc"))

            for query in read_requests(queue, 5, on_bad_schema=print, on_cancel=print,
                                       on_expired=expired):
                bus.sender(query.reply_to).send(
                    env_mod.response(query, "svc", {"text": "served"}, eof=True))
                return

    with Bus.open(bus_path) as bus:
        service = threading.Thread(target=serve_when_free, daemon=True)
        service.start()
        wait_until(lambda: bus.get(health_key("svc")) is not None)
        with ServiceClient(bus, "svc", "test") as client:
            assert client.call({"op": "chat"}, idle_timeout=0.1) == {"text": "served"}
    service.join(10)


def own_service_queue(path: str, ready: int, answer_first_piece: bool) -> None:
    """A service process: takes the 'svc' queue, (maybe) starts answering, then hangs."""
    bus = Bus.open(path)
    queue = bus.queue("svc", service=True)
    beat(bus, os.getpid(), 1)
    os.write(ready, b"r")
    if answer_first_piece:
        query = queue.recv(timeout=10)
        assert query is not None
        bus.sender(query.reply_to).send(env_mod.response(query, "svc", {"text": "Once"}, seq=0))
    time.sleep(60)


def start_service(path: str, answer_first_piece: bool) -> int:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a real separate process that can be SIGKILLed
        try:
            own_service_queue(path, write, answer_first_piece)
        finally:
            os._exit(0)
    assert os.read(read, 1) == b"r"
    os.close(read)
    os.close(write)
    return pid


class Incarnation:
    """What the restarted service read off its queue (duplicates too) and what it served."""

    def __init__(self) -> None:
        self.read: list[str] = []
        self.served: list[str] = []


class RecordingRequests(RecentRequests):
    """The daemons' own dedupe, noting every id it is shown."""

    def __init__(self, read: list[str]) -> None:
        super().__init__()
        self.read = read

    def first_time(self, request_id: str) -> bool:
        self.read.append(request_id)
        return super().first_time(request_id)


def next_incarnation(path: str, answer: str) -> tuple[threading.Thread, Incarnation]:
    """The restarted service: adopts the queue once its owner is dead and answers each
    query it reads (through read_requests, as the daemons do) once."""
    seen = Incarnation()

    def run() -> None:
        with Bus.open(path) as bus:
            wait_until(lambda: not bus.queue_owner("svc").alive)  # type: ignore[union-attr]
            queue = bus.queue("svc", service=True)
            recent = RecordingRequests(seen.read)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                for query in read_requests(queue, 0.2, on_bad_schema=print, on_cancel=print,
                                           on_expired=print, seen=recent):
                    seen.served.append(query.id)
                    bus.sender(query.reply_to).send(
                        env_mod.response(query, "svc", {"text": answer}, seq=0, eof=True))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_an_answer_cut_by_a_crash_is_asked_again_from_the_next_incarnation(
        bus_path: str) -> None:
    pid = start_service(bus_path, answer_first_piece=True)
    notices: list[str] = []
    with Bus.open(bus_path) as bus, ServiceClient(bus, "svc", "test",
                                                  on_restart=notices.append) as client:
        stream = client.request({"op": "chat"}, idle_timeout=30)
        assert next(stream).payload == {"text": "Once"}
        kill(pid)
        started = time.monotonic()
        thread, incarnation = next_incarnation(bus_path, "Once upon a time")
        rest = list(stream)
        assert time.monotonic() - started < 5, "the client waited for its idle timeout"
    assert [e.payload for e in rest] == [{"text": "Once upon a time"}]
    assert notices == [f"svc restarted while answering (pid {pid} died); the answer was cut; "
                       "asking again"]
    thread.join(10)
    assert incarnation.served == [rest[0].id]


def test_without_a_restart_handler_a_cut_answer_fails_at_once(bus_path: str) -> None:
    pid = start_service(bus_path, answer_first_piece=True)
    with Bus.open(bus_path) as bus, ServiceClient(bus, "svc", "test") as client:
        stream = client.request({"op": "chat"}, idle_timeout=30)
        next(stream)
        kill(pid)
        started = time.monotonic()
        with pytest.raises(AnswerCut, match=f"pid {pid} died.*ask again"):
            next(stream)
        assert time.monotonic() - started < 3


def sent_to(bus: Bus, channel: str) -> int:
    """How many envelopes were sent to ``channel`` (the bus's own counter)."""
    return next(c.sent for c in bus.channel_info() if c.name == channel)


def test_a_request_still_queued_and_resent_is_served_once(bus_path: str) -> None:
    """The hung owner never read it: the next one finds the original and the resend."""
    pid = start_service(bus_path, answer_first_piece=False)
    answers: list[env_mod.Envelope] = []
    with Bus.open(bus_path) as bus, ServiceClient(bus, "svc", "test") as client:
        asker = threading.Thread(
            target=lambda: answers.extend(client.request({"op": "chat"}, idle_timeout=30)),
            daemon=True)
        asker.start()
        wait_until(lambda: sent_to(bus, "svc") == 1)  # sent while its holder was alive
        kill(pid)
        wait_until(lambda: sent_to(bus, "svc") == 2)  # the client saw it die and resent
        thread, incarnation = next_incarnation(bus_path, "hello")
        asker.join(10)
        assert not asker.is_alive(), "no answer came"
    assert [e.payload for e in answers] == [{"text": "hello"}]
    thread.join(10)
    query = answers[0].id
    assert incarnation.read == [query, query], "the original and its resend were both queued"
    assert incarnation.served == [query]
