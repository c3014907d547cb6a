"""Talking to a Runa service over the bus: send a query, read its streamed answer.

Used by ``runa ask`` and ``runa chat`` (and later the web UI): it owns a private
reply queue, checks that the service is alive before waiting on it, turns error
envelopes into exceptions and can cancel a running request.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from runa.bus import EX_UNAVAILABLE, health_key
from runa.errors import RunaError
from runa.splinter import Bus, Envelope, Fault
from runa.splinter import envelope as env_mod
from runa.splinter.errors import Backpressure, ChannelNotFound

# How a fault from a service ends a command (sysexits where one fits).
FAULT_EXIT = {
    Fault.BAD_SCHEMA: 65,  # EX_DATAERR: the request itself was wrong
    Fault.UNKNOWN_TYPE: 65,
    Fault.NOT_AUTHORIZED: 77,  # EX_NOPERM
    Fault.BACKPRESSURE: 75,  # EX_TEMPFAIL: busy, try again
    Fault.STREAM_TIMEOUT: 75,
    Fault.TTL_EXPIRED: 75,
    Fault.INTERNAL_ERROR: 70,  # EX_SOFTWARE
}


# How soon a request notices its ``stop`` event while the service is silent.
STOP_POLL = 0.1
# How long a cancel waits for the service's final envelope.
CANCEL_WAIT = 5.0


class ServiceUnavailable(RunaError):
    """The service is not running (no queue, or no heartbeat)."""

    exit_code = EX_UNAVAILABLE


class ServiceFault(RunaError):
    """The service answered with an error envelope."""

    def __init__(self, service: str, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.code = int(payload.get("code", Fault.INTERNAL_ERROR))
        self.name = str(payload.get("name", "INTERNAL_ERROR"))
        self.exit_code = FAULT_EXIT.get(self.code, 1)  # type: ignore[call-overload]
        super().__init__(f"{service}: {payload.get('message', 'failed')} ({self.name})")


class ServiceClient:
    """One client of one service; not shared between threads."""

    def __init__(self, bus: Bus, service: str, client_name: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.service = service
        self.client_name = client_name
        self.clock = clock
        self.reply_name = f"{client_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.replies = bus.queue(self.reply_name)
        self._active: str | None = None

    def close(self) -> None:
        self.replies.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        """Whether the service's heartbeat is on the bus (it expires after three intervals)."""
        return self.bus.get(health_key(self.service)) is not None

    def health(self) -> dict[str, Any] | None:
        raw = self.bus.get(health_key(self.service))
        return json.loads(raw) if raw else None

    def _sender(self):
        try:
            return self.bus.sender(self.service)
        except ChannelNotFound:
            raise ServiceUnavailable(
                f"{self.service} is not running (no '{self.service}' channel on the bus); "
                "start Runa with 'systemctl --user start runa.target' or 'runa up'") from None

    def check_running(self, grace: float = 3.0) -> None:
        """Fail fast, saying what to do, when the service has no queue or no heartbeat.

        A service that has just started may not have written its first heartbeat yet,
        so a missing one is waited for up to ``grace`` seconds.
        """
        self._sender()
        deadline = self.clock() + grace
        while not self.alive():
            if self.clock() >= deadline:
                raise ServiceUnavailable(
                    f"{self.service} has no heartbeat (starting, hung or stopped); see "
                    "'runa status', or start Runa with 'runa up'")
            time.sleep(0.05)

    def call(self, payload: dict[str, Any], *, idle_timeout: float = 30.0) -> dict[str, Any]:
        """One query, one answer: the payload of its final response envelope."""
        for envelope in self.request(payload, idle_timeout=idle_timeout):
            if envelope.eof:
                return envelope.payload
        raise ServiceFault(self.service, {"code": Fault.INTERNAL_ERROR,
                                          "message": "the answer ended without its last part"})

    def request(self, payload: dict[str, Any], *, idle_timeout: float = 30.0,
                stop: threading.Event | None = None) -> Iterator[Envelope]:
        """Send a query and yield its response envelopes until the one with ``eof``.

        Raises ServiceUnavailable when the service is not there or stops heartbeating
        while nothing arrives for ``idle_timeout`` seconds, and ServiceFault on an error
        envelope. Once ``stop`` is set (by another thread) the request is cancelled within
        ``STOP_POLL`` seconds, even while the service is still silent (a long prompt), and
        the stream ends with the service's final envelope if one comes.
        """
        sender = self._sender()
        query = env_mod.query(self.client_name, self.service, payload, reply_to=self.reply_name)
        # Set before sending and kept if the caller is interrupted mid-stream (Ctrl-C), so
        # cancel() knows what to stop even when the interrupt lands right after the send.
        self._active = query.id
        try:
            sender.send(query)
        except Backpressure:
            self._active = None
            raise ServiceFault(self.service, {"code": Fault.BACKPRESSURE,
                                              "message": "its queue is full; try again"}) \
                from None
        sent_to = _incarnation(self.health())
        quiet_since = self.clock()
        while True:
            if stop is not None and stop.is_set():
                final = self.cancel()
                if final is not None and final.type != "error":
                    yield final
                return
            envelope = self.replies.recv(timeout=0.5 if stop is None else STOP_POLL)
            if envelope is None:
                if self.clock() - quiet_since > idle_timeout:
                    self._fail_if_gone(sent_to)
                continue
            quiet_since = self.clock()
            if envelope.id != query.id:
                continue  # a late answer to an earlier, cancelled request
            if envelope.type == "error":
                self._active = None
                raise ServiceFault(self.service, envelope.payload)
            if envelope.eof:
                self._active = None
            yield envelope
            if envelope.eof:
                return

    def _fail_if_gone(self, sent_to: tuple[Any, Any] | None) -> None:
        """Raise when a quiet service has no heartbeat, or is a new incarnation.

        A service that died holding the query (taken off its queue, not answered) is
        replaced by one that heartbeats but never heard of it: without this check the
        client would wait for ever. Queries still queued are adopted and answered by
        the new incarnation, so this is only decided after ``idle_timeout`` of silence.
        """
        health = self.health()
        if health is None:
            self._active = None
            raise ServiceUnavailable(f"{self.service} stopped answering and has no heartbeat")
        now = _incarnation(health)
        if sent_to is not None and now != sent_to:
            self._active = None
            raise ServiceUnavailable(
                f"{self.service} restarted while this request was waiting (pid {sent_to[0]} "
                f"→ {now[0]}) and the new one has not answered it; it was probably lost with "
                "the old process: ask again")

    def cancel(self, wait: float = CANCEL_WAIT) -> Envelope | None:
        """Stop the running request; return its final envelope if it arrives within ``wait``."""
        target = self._active
        if target is None:
            return None
        self._sender().send(env_mod.cancel(self.client_name, self.service, target,
                                           reply_to=self.reply_name))
        deadline = self.clock() + wait
        while self.clock() < deadline:
            envelope = self.replies.recv(timeout=max(0.0, deadline - self.clock()))
            if envelope is not None and envelope.id == target and (
                    envelope.eof or envelope.type == "error"):
                self._active = None
                return envelope
        return None


def _incarnation(health: dict[str, Any] | None) -> tuple[Any, Any] | None:
    """Which process answers for the service: (pid, incarnation) from its heartbeat."""
    if health is None:
        return None
    return (health.get("pid"), health.get("incarnation"))
