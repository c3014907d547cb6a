"""gilgul's secrets broker: the one way to coven, for components and for ``runa secret``.

It consumes the queue ``gilgul.secrets`` on the main bus (``runa.protocol.secrets``). For
each request it asks the kernel which process sent it (the claimant of its id,
``Bus.request_sender``) and which holds its ``reply_to`` queue; unless they are the same
process the request is refused, as is a second request with an id already read (a replay).
It names that process (``runa.gilgul.requesters``: a component, or the person), lets the registry's
read policy decide (``runa.gilgul.secret_policy``) and either refuses (``NOT_AUTHORIZED``,
and a ``secret_refused`` event in the journal: op, secret name, requester, pid, never a
value) or asks coven on the coven bus, with ``for`` and ``pid`` naming whom it identified,
and relays coven's answer. Every payload is sealed with the stack's bus key.

The broker only forwards requests to the process the kernel names as the holder of the
``coven`` queue when that process is coven itself, so a process that took coven's queue
while coven was down is never handed a value.

It serves one request at a time and never waits longer than ``coven_wait_s`` for coven, so
it runs beside gilgul's loop (``BrokerThread``) without holding it up: gilgul's own loop
blocks on D-Bus or the notify socket, which a wait on a bus queue cannot join, and a secret
should not wait half a second for gilgul's next turn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from runa import log, stackbus
from runa.config import Config
from runa.crypto.sealed import BusKey, Opened, SealError, key_path
from runa.gilgul.requesters import Identify, Requester
from runa.gilgul.secret_policy import ReadPolicy
from runa.paths import Paths
from runa.protocol import secret_wire as wire
from runa.protocol.payloads import PayloadError
from runa.protocol.secrets import BROKER, BROKER_OPS, COVEN, COVEN_OPS, SEALED_CONTEXTS
from runa.registry import Registry
from runa.splinter import Bus, Envelope, EnvelopeReceiver, Fault, QueueReceiver
from runa.splinter import envelope as env_mod
from runa.splinter.errors import BadSchema, MessageTooLarge, SplinterError, TtlExpired

SENDER = "gilgul"
#: How long the broker waits for coven's answer (an unlock runs Argon2id: about half a second).
COVEN_WAIT_S = 10.0
#: How often a wait for coven looks whether coven is still alive.
COVEN_LOOK_S = 0.25
_NAME_SHOWN = 64  # a name longer than any secret's is cut in the journal


class CovenUnavailable(Exception):
    """coven cannot be asked (not running, restarting, silent, or not coven at all)."""

    def __init__(self, message: str, reason: str = wire.COVEN_NOT_RUNNING) -> None:
        self.reason = reason
        super().__init__(message)


class SecretsBroker:
    """Serves ``gilgul.secrets``; its buses and bus key are opened when first needed
    (under systemd gilgul starts before the keeper has made the buses)."""

    def __init__(self, *, open_main: Callable[[], Bus | None],
                 open_coven: Callable[[], Bus | None], load_key: Callable[[], BusKey],
                 identify: Identify, policy: ReadPolicy, logger: logging.Logger,
                 coven_wait_s: float = COVEN_WAIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.open_main = open_main
        self.open_coven = open_coven
        self.load_key = load_key
        self.identify = identify
        self.policy = policy
        self.logger = logger
        self.coven_wait_s = coven_wait_s
        self.clock = clock
        self._main: Bus | None = None
        self._queue: EnvelopeReceiver[QueueReceiver] | None = None
        self._coven: Bus | None = None
        self._replies: EnvelopeReceiver[QueueReceiver] | None = None
        self._key: BusKey | None = None
        self._seen = stackbus.RecentRequests()

    # -- the loop ---------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the broker's queue is open (the main bus exists); tries to open it."""
        if self._queue is None:
            self._main = self.open_main()
            if self._main is None:
                return False
            self._queue = self._main.queue(BROKER, service=True)
        return True

    def serve(self, timeout: float) -> bool:
        """Answer what the queue holds, waiting up to ``timeout`` s for the first request.

        False (at once) while the main bus does not exist yet.
        """
        if not self.ready():
            return False
        assert self._queue is not None
        for request in stackbus.read_requests(self._queue, timeout, on_bad_schema=self._bad_schema,
                                     on_cancel=lambda _envelope: None,
                                     on_expired=self._expired, seen=self._seen,
                                     on_repeat=self._replayed):
            if request.type == "query" and request.reply_to:
                self.handle(request)
        return True

    def close(self) -> None:
        for closing in (self._queue, self._replies):
            if closing is not None:
                closing.close()
        for bus in (self._main, self._coven):
            if bus is not None:
                bus.close()
        if self._key is not None:
            self._key.close()
        self._queue = self._replies = None
        self._main = self._coven = None
        self._key = None

    # -- one request ------------------------------------------------------------------------

    def handle(self, request: Envelope) -> None:
        """Identify, decide, forward, relay; every way out answers the requester."""
        assert self._main is not None and request.reply_to is not None
        pid = self._main.queue_holder(request.reply_to)
        if pid is None:
            self._refuse(request, None, "?", None,
                         f"the kernel names no live process holding the reply queue "
                         f"{request.reply_to!r}; answers go only to the process that asked")
            return
        sender = self._main.request_sender(request.id)
        if sender != pid:
            self._refuse(request, None, "?", None,
                         f"the request was sent by "
                         f"{'no process the kernel can name' if sender is None else sender}, "
                         f"not by pid {pid}, the holder of its reply queue")
            return
        requester = self.identify(pid)
        if self._main.queue_holder(request.reply_to) != pid:  # pid reused meanwhile
            self._refuse(request, None, "?", None,
                         f"pid {pid} stopped holding the reply queue while it was named")
            return
        opened: Opened | None = None
        try:
            opened = self._key_now().open(SEALED_CONTEXTS["broker_request"], request.payload)
            op, name, extra = _read(opened.fields)
            decision = self.policy.decide(requester, op, name)
            if not decision.allowed:
                self._refuse(request, requester, op, name, decision.why)
                return
            self._forward(request, requester, op, name, extra, opened.value)
        except (SealError, PayloadError) as error:
            self._fault(request, Fault.BAD_SCHEMA, str(error), wire.EX_DATAERR)
        except CovenUnavailable as error:
            self._fault(request, Fault.INTERNAL_ERROR, str(error), wire.EX_UNAVAILABLE,
                        reason=error.reason)
        except Exception as error:
            self.logger.exception("the secrets broker failed on a %s request",
                                  type(error).__name__)
            self._fault(request, Fault.INTERNAL_ERROR,
                        f"the secrets broker failed ({type(error).__name__}); see gilgul's "
                        "journal", 70)
        finally:
            if opened is not None:
                opened.wipe()

    def _forward(self, request: Envelope, requester: Requester, op: str, name: str | None,
                 extra: dict[str, Any], value: bytearray) -> None:
        named = {} if name is None else {"name": name}
        fields = {**COVEN_OPS[op].request(**named, pid=requester.pid,
                                          **{"for": requester.name}), **extra}
        answer = self._ask_coven(fields, value)
        if answer.type == "error":
            self._send(request, env_mod.Envelope("error", SENDER, request.sender,
                                                 dict(answer.payload), id=request.id))
            return
        reply = self._key_now().open(SEALED_CONTEXTS["coven_reply"], answer.payload)
        try:
            if op == "list":
                reply.fields[wire.SECRETS] = self.policy.readable(
                    requester, reply.fields.get(wire.SECRETS) or [])
            sealed = self._key_now().seal(SEALED_CONTEXTS["broker_reply"], reply.fields,
                                          reply.value)
        finally:
            reply.wipe()
        self._send(request, env_mod.response(request, SENDER, sealed, eof=True))

    # -- coven ------------------------------------------------------------------------------

    def _coven_bus(self) -> Bus:
        if self._coven is None:
            self._coven = self.open_coven()
            if self._coven is None:
                raise CovenUnavailable("coven is not running (the stack has no coven bus: "
                                       "is the bus keeper running?)")
        return self._coven

    def _check_coven(self, bus: Bus) -> None:
        """Raise CovenUnavailable unless coven itself consumes the ``coven`` queue."""
        owner = bus.queue_owner(COVEN)
        if owner is None:
            raise CovenUnavailable("coven is not running (start it with the stack: "
                                   "'systemctl --user start runa.target' or 'runa up')")
        if not owner.alive:
            raise CovenUnavailable("coven is not running: it stopped and is being "
                                   "restarted; ask again in a moment")
        holder = bus.queue_holder(COVEN)
        who = self.identify(holder) if holder is not None else None
        if who is None or who.name != COVEN:
            raise CovenUnavailable(
                "coven is not running: the coven queue is held by "
                + (f"pid {holder} ({who.name if who else '?'})" if holder else
                   "no process the kernel can name")
                + ", not by coven; secrets are not handed to it")

    def _ask_coven(self, fields: dict[str, Any], value: bytearray) -> Envelope:
        bus = self._coven_bus()
        self._check_coven(bus)
        if self._replies is None:
            self._replies = bus.queue(f"{SENDER}.{os.getpid()}")
        query = env_mod.query(SENDER, COVEN,
                              self._key_now().seal(SEALED_CONTEXTS["coven_request"], fields,
                                                   value),
                              reply_to=self._replies.name,
                              ttl_ms=int(self.coven_wait_s * 1000))
        try:
            with bus.claim_request(query.id):  # coven checks that gilgul sent it
                bus.sender(COVEN).send(query)
                return self._coven_answer(bus, self._replies, query)
        except SplinterError as error:
            raise CovenUnavailable(f"coven could not be asked: {error}") from None

    def _coven_answer(self, bus: Bus, replies: EnvelopeReceiver[QueueReceiver],
                      query: Envelope) -> Envelope:
        deadline = self.clock() + self.coven_wait_s
        while (left := deadline - self.clock()) > 0:
            try:
                answer = replies.recv(min(left, COVEN_LOOK_S))
            except BadSchema:
                continue
            if answer is None:
                owner = bus.queue_owner(COVEN)
                if owner is None or not owner.alive:
                    raise CovenUnavailable("coven stopped before it answered; ask again")
                continue
            if answer.id == query.id and (answer.eof or answer.type == "error"):
                return answer
        raise CovenUnavailable(f"coven did not answer within {self.coven_wait_s:g} s",
                               wire.COVEN_NOT_ANSWERING)

    # -- answers ----------------------------------------------------------------------------

    def _key_now(self) -> BusKey:
        if self._key is None:
            self._key = self.load_key()
        return self._key

    def _send(self, request: Envelope, answer: Envelope) -> None:
        assert self._main is not None and request.reply_to is not None
        try:
            self._main.sender(request.reply_to).send(answer)
        except MessageTooLarge as error:  # a large secret, sealed, on a small main bus
            self._fault(request, Fault.INTERNAL_ERROR,
                        f"the answer does not fit on the main bus ({error}); raise "
                        "bus.envelope_max_bytes to read this secret", wire.EX_DATAERR)
        except SplinterError as error:  # the requester went away, or its queue is full
            self.logger.info("secrets broker: no answer delivered to %s: %s",
                             request.reply_to, error)

    def _fault(self, request: Envelope, code: Fault, message: str, exit_code: int,
               reason: str | None = None) -> None:
        answer = env_mod.fault(code, message, sender=SENDER, to=request.sender, id=request.id)
        answer.payload[wire.EXIT_CODE] = exit_code
        if reason is not None:
            answer.payload[wire.REASON] = reason
        self._send(request, answer)

    def _refuse(self, request: Envelope, requester: Requester | None, op: str,
                name: str | None, why: str) -> None:
        """NOT_AUTHORIZED to the requester, and the refusal in the journal (never a value)."""
        who = requester.name if requester else "unknown"
        pid = requester.pid if requester else 0
        shown = (name or "")[:_NAME_SHOWN]
        fields: dict[str, Any] = dict(op=op, secret=shown, requester=who, requester_pid=pid)
        if requester is not None and not requester.is_person:
            fields["component"] = requester.name
        log.event(self.logger, "secret_refused",
                  f"refused {op} of {shown or 'the vault'} to {who} (pid {pid}): {why}",
                  level=logging.WARNING, **fields)
        self._fault(request, Fault.NOT_AUTHORIZED, why, wire.EX_NOPERM,
                    reason=wire.NOT_AUTHORIZED)

    def _replayed(self, request: Envelope) -> None:
        if request.type == "query" and request.reply_to:
            self._refuse(request, None, "?", None,
                         f"request id {request.id} was already read: a replay")

    def _bad_schema(self, error: BadSchema) -> None:
        target = env_mod.reply_channel(None, error)
        if target is not None and self._main is not None:
            with contextlib.suppress(SplinterError):
                self._main.sender(target).send(env_mod.error_reply(None, error, sender=SENDER))

    def _expired(self, request: Envelope, error: TtlExpired) -> None:
        if request.reply_to:
            self._send(request, env_mod.error_reply(request, error, sender=SENDER))


def _read(fields: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """The op, the secret's name (None for ops without one) and what else a known op carries
    (``create``'s ``size``, ``rotate``'s ``mode``), checked against ``BROKER_OPS``."""
    op = fields.get("op")
    if not isinstance(op, str) or op not in BROKER_OPS:
        raise PayloadError(str(op), "op", f"'op' must be one of {', '.join(BROKER_OPS)}")
    spec = BROKER_OPS[op]
    name = spec.read(fields, "name") if any(f.name == "name" for f in spec.fields) else None
    extra: dict[str, Any] = {}
    if op == "create" and (size := spec.read(fields, "size")) is not None:
        extra["size"] = size
    if op == "rotate" and fields.get(wire.MODE) is not None:
        if fields[wire.MODE] not in wire.MODES:
            raise PayloadError(op, wire.MODE, f"'mode' must be one of {', '.join(wire.MODES)}")
        extra[wire.MODE] = fields[wire.MODE]
    return op, name, extra


class BrokerThread:
    """Runs a broker beside gilgul's loop; the loop calls ``check`` to learn it died."""

    def __init__(self, broker: SecretsBroker, logger: logging.Logger,
                 poll_s: float = 0.25) -> None:
        self.broker = broker
        self.logger = logger
        self.poll_s = poll_s
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="secrets-broker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.broker.serve(self.poll_s):
                    self._stop.wait(self.poll_s)  # no main bus yet
        except BaseException as error:
            self.failure = error
            self.logger.exception("the secrets broker stopped")
        finally:
            self.broker.close()

    def reconfigure(self, registry: Registry) -> None:
        """Decide by a reloaded registry from the next request on."""
        self.broker.policy.registry = registry

    def check(self) -> None:
        """Raise in gilgul's loop if the broker died (gilgul is then restarted)."""
        if self.failure is not None:
            raise RuntimeError("the secrets broker stopped") from self.failure

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def for_stack(config: Config, stack: str, paths: Paths, registry: Registry,
              identify: Identify, logger: logging.Logger) -> BrokerThread:
    """The broker of ``stack`` on its main and coven buses, with its bus key, in a thread."""
    def opener(bus: str) -> Callable[[], Bus | None]:
        def open_bus() -> Bus | None:
            try:
                return stackbus.connect(config, stack, bus)
            except stackbus.BusNotRunning:
                return None

        return open_bus

    broker = SecretsBroker(open_main=opener("main"), open_coven=opener("coven"),
                           load_key=lambda: BusKey.load_or_create(key_path(paths.runtime)),
                           identify=identify, policy=ReadPolicy(registry), logger=logger)
    return BrokerThread(broker, logger)
