"""Talking to a Runa service over the bus: send a query, read its streamed answer.

Used by ``runa ask`` and ``runa chat`` (and later the web UI): it owns a private
reply queue, checks that the service is alive before waiting on it, turns error
envelopes into exceptions and can cancel a running request. ``SealedClient`` is the same
for the one-query, one-answer services whose payloads are sealed (gilgul's secrets broker,
alethia): the clients of both are made of it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

from runa.crypto import sodium
from runa.crypto.sealed import BusKey, Opened
from runa.errors import RunaError
from runa.protocol import faults
from runa.protocol.heartbeat import Heartbeat, health_key
from runa.splinter import Bus, Envelope, Fault
from runa.splinter import envelope as env_mod
from runa.splinter.bus import EnvelopeSender
from runa.splinter.errors import (
    Backpressure,
    BadSchema,
    ChannelNotFound,
    MessageTooLarge,
    SplinterError,
)
from runa.stackbus import EX_UNAVAILABLE

# How soon a request notices its ``stop`` event while the service is silent.
STOP_POLL = 0.1
# How long a cancel waits for the service's final envelope.
CANCEL_WAIT = 5.0
# How often a waiting request looks whether the process holding it is still alive.
OWNER_POLL = 0.25
# How often one request is sent again after the process holding it died (a request that
# kills every incarnation that reads it must not crash-loop the service for ever).
MAX_RESENDS = 2
# The shortest ``ttl_ms`` a query goes with, however short its client's wait: time for the
# service to finish another answer, or to be restarted after a crash (by default gilgul's
# longest backoff, 30 s, plus a start, up to 30 s), so a short wait is no TTL_EXPIRED.
MIN_TTL_S = 60.0



#: What each service does, in the words a person reads first ("the inference service
#: (splinfer) is not running"); Runa's names are explained by 'runa help terms'.
SERVICE_ROLES = {"splinfer": "the inference service", "tieto": "the retrieval service",
                 "whisper": "the semantic policy tier",
                 "splinter": "the bus keeper", "gilgul": "the service manager",
                 "alethia": "the memory service"}


def service_name(service: str) -> str:
    """``service`` as a person reads it: what it does, then its name."""
    role = SERVICE_ROLES.get(service)
    return f"{role} ({service})" if role else service


class ServiceUnavailable(RunaError):
    """The service is not running (no queue, or no heartbeat)."""

    exit_code = EX_UNAVAILABLE


class AnswerCut(ServiceUnavailable):
    """The service died while streaming the answer, and the caller did not want it re-run."""


class ServiceFault(RunaError):
    """The service answered with an error envelope (or the bus refused the request: the
    same fault either way); its exit status is the protocol's (``runa.protocol.faults``)."""

    def __init__(self, service: str, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.code = faults.fault_code(payload)
        self.name = str(payload.get("name", "INTERNAL_ERROR"))
        self.exit_code = faults.exit_status(payload)
        super().__init__(f"{service}: {payload.get('message', 'failed')} ({self.name})")


class ServiceClient:
    """One client of one service; not shared between threads."""

    def __init__(self, bus: Bus, service: str, client_name: str,
                 clock: Callable[[], float] = time.monotonic,
                 on_restart: Callable[[str], None] | None = None) -> None:
        """``on_restart``: told (with a sentence for the person) when the service died in the
        middle of an answer, which is then asked again and streams anew from its start;
        without it such a request fails at once (AnswerCut)."""
        self.bus = bus
        self.service = service
        self.name = service_name(service)
        self.client_name = client_name
        self.clock = clock
        self.on_restart = on_restart
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

    def health(self) -> Heartbeat | None:
        """The service's last heartbeat; None when it has none (or an unreadable one)."""
        return Heartbeat.from_json(self.service, self.bus.get(health_key(self.service)))

    def _sender(self) -> EnvelopeSender:
        try:
            return self.bus.sender(self.service)
        except ChannelNotFound:
            raise ServiceUnavailable(
                f"{self.name} is not running (no '{self.service}' channel on the bus); "
                "start Runa with 'systemctl --user start runa.target' or 'runa up'") from None

    def restarting(self) -> bool:
        """Whether the service died and its queue waits for the next incarnation."""
        owner = self.bus.queue_owner(self.service)
        return owner is not None and owner.service and not owner.alive

    def check_running(self, grace: float = 3.0, restart_wait: float = 0.0) -> None:
        """Fail fast, saying what to do, when the service has no queue or no heartbeat.

        A service that has just started may not have written its first heartbeat yet,
        so a missing one is waited for up to ``grace`` seconds; one that died and is being
        restarted (its queue waits for the next incarnation) up to ``restart_wait``.
        """
        self._sender()
        start = self.clock()
        while (restarting := self.restarting()) or not self.alive():
            if self.clock() - start >= max(grace, restart_wait if restarting else 0.0):
                raise ServiceUnavailable(
                    f"{self.name} died and has not come back (see 'runa status')"
                    if restarting else
                    f"{self.name} has no heartbeat (starting, hung or stopped); see "
                    "'runa status', or start Runa with 'runa up'")
            time.sleep(0.05)

    def call(self, payload: dict[str, Any], *, idle_timeout: float = 30.0) -> dict[str, Any]:
        """One query, one answer: the payload of its final response envelope."""
        for envelope in self.request(payload, idle_timeout=idle_timeout):
            if envelope.eof:
                return envelope.payload
        raise ServiceFault(self.service, {"code": Fault.INTERNAL_ERROR,
                                          "message": "the answer ended without its last part"})

    def _send(self, sender: EnvelopeSender, query: Envelope) -> None:
        try:
            sender.send(query)
        except Backpressure:
            self._active = None
            raise ServiceFault(self.service, {"code": Fault.BACKPRESSURE,
                                              "message": "its queue is full; try again"}) \
                from None
        except ChannelNotFound:
            self._active = None
            raise ServiceUnavailable(
                f"{self.name} stopped (its '{self.service}' channel is gone); start Runa "
                "with 'systemctl --user start runa.target' or 'runa up'") from None

    def request(self, payload: dict[str, Any], *, idle_timeout: float = 30.0,
                stop: threading.Event | None = None,
                before_send: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                ) -> Iterator[Envelope]:
        """Send a query and yield its response envelopes until the one with ``eof``.

        The query's ``ttl_ms`` is ``idle_timeout``, at least ``MIN_TTL_S``: a query that
        waited longer in the queue (its service dead or hung) is not served once nobody
        waits for it any more.

        When the process holding the query dies (seen within ``OWNER_POLL`` seconds from its
        queue's owner), the query is sent again, with the same id, to the next incarnation,
        which adopts the queue: a copy it finds twice is answered once. If part of the
        answer was already yielded, ``on_restart`` is told and the answer starts again from
        its first piece; without ``on_restart`` AnswerCut is raised at once.

        ``before_send`` readies the service before each send, the first and every resend:
        given ``payload``, it returns the payload to send (``ChatSession`` uploads a long
        message's pieces in it, which a dead process takes with it). Such a query needs
        what the process it went to holds, so it is resent as a new query (a new id): a
        copy still queued is refused by the next incarnation, and that answer ignored.

        Raises ServiceUnavailable when the service is not there or stops heartbeating, or
        died and nothing took its queue over, while nothing arrives for ``idle_timeout``
        seconds, and ServiceFault on an error envelope. Once ``stop`` is set (by another
        thread) the request is cancelled within ``STOP_POLL`` seconds, even while the
        service is still silent (a long prompt), and the stream ends with the service's
        final envelope if one comes.
        """
        if math.isnan(idle_timeout):
            raise ValueError("idle_timeout is NaN: a wait that would never end")
        sender = self._sender()
        query = self._query(payload, idle_timeout, before_send)
        sent_to = _incarnation(self.health())
        holder = self._holder(before_send is not None)
        self._send(sender, query)
        quiet_since = next_look = self.clock()
        yielded = False
        resends = 0
        while True:
            if stop is not None and stop.is_set():
                final = self.cancel()
                if final is not None and final.type != "error":
                    yield final
                return
            envelope = self.replies.recv(timeout=OWNER_POLL if stop is None else STOP_POLL)
            if envelope is None:
                now = self.clock()
                if now >= next_look:
                    next_look = now + OWNER_POLL
                    if holder is None:
                        holder = self._live_owner()
                    elif self._holder_died(holder):
                        # Everything it sent has been read: the answer was cut or never began.
                        if resends == MAX_RESENDS:
                            self._active = None
                            raise ServiceUnavailable(
                                f"{self.name} died {resends + 1} times while holding this "
                                "request; it is not sent again (see 'runa status' and the "
                                "journal)")
                        resends += 1
                        if yielded:
                            notice = (f"{self.name} restarted while answering (pid "
                                      f"{holder[0]} died); the answer was cut")
                            if self.on_restart is None:
                                self._active = None
                                raise AnswerCut(f"{notice}: ask again")
                            self.on_restart(f"{notice}; asking again")
                        if before_send is None:  # the same query: a copy is served once
                            query = dataclasses.replace(query, ts=env_mod.rfc3339())
                        else:
                            query = self._query(payload, idle_timeout, before_send)
                        holder = self._holder(before_send is not None)
                        self._send(sender, query)
                        sent_to = None
                        yielded = False
                        quiet_since = self.clock()
                if now - quiet_since > idle_timeout:
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
            yielded = True
            yield envelope
            if envelope.eof:
                return

    def _query(self, payload: dict[str, Any], idle_timeout: float,
               before_send: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Envelope:
        """The query envelope to send, ``before_send`` done (a new id each time)."""
        if before_send is not None:
            payload = before_send(payload)
        query = env_mod.query(self.client_name, self.service, payload, reply_to=self.reply_name,
                              ttl_ms=_ttl_ms(idle_timeout))
        # Set before sending and kept if the caller is interrupted mid-stream (Ctrl-C), so
        # cancel() knows what to stop even when the interrupt lands right after the send.
        self._active = query.id
        return query

    def _holder_died(self, holder: tuple[int, int]) -> bool:
        """Whether the process that held the request is gone (dead, or replaced by another)."""
        owner = self.bus.queue_owner(self.service)
        return owner is not None and ((owner.pid, owner.start) != holder or not owner.alive)

    def _holder(self, sent_ahead: bool) -> tuple[int, int] | None:
        """Who will read the query about to be sent: the live process consuming the queue.

        With something ``sent_ahead`` (``before_send``) it is the consumer even if it is
        dead already: it took that with it, so the query must be sent again at once.
        """
        owner = self.bus.queue_owner(self.service)
        if owner is None or not (owner.alive or sent_ahead):
            return None
        return (owner.pid, owner.start)

    def _live_owner(self) -> tuple[int, int] | None:
        """(pid, start time) of the live process that consumes the service's queue now."""
        owner = self.bus.queue_owner(self.service)
        return (owner.pid, owner.start) if owner is not None and owner.alive else None

    def _fail_if_gone(self, sent_to: tuple[Any, Any] | None) -> None:
        """Raise when a quiet service has no heartbeat, is a new incarnation, or died and
        nothing took its queue over.

        Queries still queued are adopted and answered by the new incarnation, and queries
        lost with a dead process are sent again (``request``), so this is only decided
        after ``idle_timeout`` of silence.
        """
        owner = self.bus.queue_owner(self.service)
        if owner is not None and owner.service and not owner.alive:
            self._active = None
            raise ServiceUnavailable(
                f"{self.name} died (pid {owner.pid}) and nothing took its requests over "
                "in time (is it restarting? see 'runa status'); start Runa with 'runa up' "
                "if it is not running")
        health = self.health()
        if health is None:
            self._active = None
            raise ServiceUnavailable(f"{self.name} stopped answering and has no heartbeat")
        now = _incarnation(health)
        if sent_to is not None and now is not None and now != sent_to:
            self._active = None
            raise ServiceUnavailable(
                f"{self.name} restarted while this request was waiting (pid {sent_to[0]} "
                f"→ {now[0]}) and the new one has not answered it; it was probably lost with "
                "the old process: ask again")

    def send_cancel(self, target: str, reply_to: str | None = None) -> None:
        """Ask the service to stop request ``target`` (``runa ingest --cancel`` names another
        client's); a full queue is the BACKPRESSURE fault a query would get."""
        self._send(self._sender(), env_mod.cancel(self.client_name, self.service, target,
                                                  reply_to=reply_to))

    def cancel(self, wait: float = CANCEL_WAIT) -> Envelope | None:
        """Stop the running request; return its final envelope if it arrives within ``wait``."""
        target = self._active
        if target is None:
            return None
        self.send_cancel(target, reply_to=self.reply_name)
        deadline = self.clock() + wait
        while self.clock() < deadline:
            envelope = self.replies.recv(timeout=max(0.0, deadline - self.clock()))
            if envelope is not None and envelope.id == target and (
                    envelope.eof or envelope.type == "error"):
                self._active = None
                return envelope
        return None


def _ttl_ms(wait_s: float) -> int | None:
    """A query's ``ttl_ms``: as long as its client waits, at least ``MIN_TTL_S`` (none for
    an endless wait)."""
    if not math.isfinite(wait_s):
        return None
    return min(env_mod.MAX_REQUEST_TTL_MS, int(max(wait_s, MIN_TTL_S) * 1000))


def _incarnation(health: Heartbeat | None) -> tuple[int, int] | None:
    """Which process answers for the service: (pid, incarnation) from its heartbeat."""
    if health is None:
        return None
    return (health.pid, health.incarnation)


class SealedClient:
    """One sealed query, one sealed answer, on a queue whose payloads are sealed with the
    stack's bus key (``runa.crypto.sealed``): what ``SecretsClient`` and ``MemoryClient`` share.

    It holds a private reply queue for its life (a service answers only a sender that holds
    the queue it names), claims each request's id while it waits (``Bus.claim_request``: the
    service asks the kernel who sent it), looks every ``OWNER_POLL`` seconds whether the
    process consuming the queue is still alive, and turns what goes wrong into the
    subclass's exceptions (``unavailable``, ``refused``, ``too_large``).
    """

    #: The queue asked, how a person reads its name, and the sealing contexts
    #: (request, reply); each subclass sets them.
    queue: str
    name: str
    contexts: tuple[str, str]

    def __init__(self, bus: Bus, key: BusKey, client_name: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.key = key
        self.clock = clock
        self.client_name = client_name
        self.replies = bus.queue(f"{client_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")

    def close(self) -> None:
        self.replies.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def running(self) -> bool:
        """Whether a live process consumes the queue now: one look at the bus, no wait."""
        owner = self.bus.queue_owner(self.queue)
        return owner is not None and owner.alive

    def ask(self, fields: Mapping[str, Any], value: sodium.Buffer = b"", *,
            timeout: float = 30.0) -> Opened:
        """The answer to ``fields`` (and ``value``), opened; the caller wipes it."""
        query = env_mod.query(self.client_name, self.queue,
                              self.key.seal(self.contexts[0], fields, value),
                              reply_to=self.replies.name, ttl_ms=max(1, int(timeout * 1000)))
        with self.bus.claim_request(query.id):
            return self.exchange(query, timeout)

    def exchange(self, query: Envelope, timeout: float) -> Opened:
        """Send ``query`` (already claimed) and wait up to ``timeout`` s for its answer."""
        try:
            self.bus.sender(self.queue).send(query)
        except ChannelNotFound:
            raise self.unavailable(
                f"{self.name} is not running (no '{self.queue}' queue on the bus): start Runa "
                "with 'systemctl --user start runa.target' or 'runa up -d'") from None
        except MessageTooLarge as error:
            raise self.too_large(error) from None
        except Backpressure:
            raise self.refused({"code": Fault.BACKPRESSURE, "name": "BACKPRESSURE",
                                "message": f"{self.name} is busy (its queue is full); "
                                "try again"}) from None
        except SplinterError as error:
            raise self.unavailable(f"{self.name} could not be asked: {error}") from None
        deadline = self.clock() + timeout
        while (left := deadline - self.clock()) > 0:
            try:
                answer = self.replies.recv(min(left, OWNER_POLL))
            except BadSchema:
                continue
            if answer is None:
                if not self.running():
                    raise self.unavailable(
                        f"{self.name} stopped before it answered; start Runa with "
                        "'systemctl --user start runa.target' or 'runa up -d'")
                continue
            if answer.id != query.id:
                continue
            if answer.type == "error":
                raise self.refused(answer.payload)
            return self.key.open(self.contexts[1], answer.payload)
        raise self.unavailable(f"{self.name} did not answer within {timeout:g} s "
                               "(see 'runa status' and the journal)")

    # -- what each failure is, as the subclass's exceptions ------------------------------

    def unavailable(self, message: str) -> RunaError:
        return ServiceUnavailable(message)

    def refused(self, payload: dict[str, Any]) -> RunaError:
        return ServiceFault(self.queue, payload)

    def too_large(self, error: MessageTooLarge) -> RunaError:
        return ServiceFault(self.queue, {"code": Fault.BAD_SCHEMA, "name": "BAD_SCHEMA",
                                         "message": f"the request does not fit on the bus "
                                         f"({error})"})
