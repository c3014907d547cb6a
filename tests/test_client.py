"""ServiceClient against a real bus segment, with the service played by a thread of the test."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from runa.bus import health_key
from runa.client import ServiceClient, ServiceUnavailable
from runa.splinter import Bus, Geometry, create_segment
from runa.splinter import envelope as env_mod


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
