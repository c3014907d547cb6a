"""coven as a daemon: the vault served to gilgul alone on the ``coven`` bus.

It listens on the queue ``coven`` (docs/protocol.md, "coven") and answers the operations of
``runa.protocol.secrets.COVEN_OPS``. Every payload is sealed with the stack's bus key
(``runa.crypto.sealed``): a request's fields and its value bytes (a secret, a passphrase)
are opened into a wiped buffer, a reply sealed the same way; faults are plain ``error``
envelopes naming no value. A payload that is not sealed, or not with this stack's key for
``coven/request``, is ``BAD_SCHEMA``, counted, and the loop goes on.

Before answering, coven asks the kernel who *sent* the request (the claimant of its id,
``Bus.request_sender``) and who consumes its ``reply_to`` queue: they must be the same
process, and that process gilgul (``runa.coven.identity``). Anything else is refused
``NOT_AUTHORIZED`` and logged (``RUNA_EVENT=secret_refused``); so is a second request with
an id coven already read (a copy taken from the ring while gilgul still waits). Every
operation on the vault is an audit event (``RUNA_EVENT=secret_access``) recorded before a
secret is sent.

At start it makes itself undumpable (``PR_SET_DUMPABLE`` 0: no core dump, no ptrace by
other processes of the uid). A key-file vault opens unlocked; a passphrase vault starts
locked: ``status`` answers, the rest is refused with ``VaultLocked`` (exit 69) until
``unlock``, and the service status says so.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runa import log
from runa import stackbus as bus_mod
from runa.config import Config
from runa.coven.contents import SecretInfo
from runa.coven.errors import CovenError, UnknownSecret, VaultAltered, VaultModeError
from runa.coven.fileformat import KeyMode
from runa.coven.identity import Decision, Mode, decide, mode_of, read_cgroup
from runa.coven.secret import SecretBytes, check_name
from runa.coven.vault import Audit, Location, Vault, VaultState, journal_audit
from runa.crypto.process import PR_GET_DUMPABLE, PR_SET_DUMPABLE, Prctl, libc_prctl
from runa.crypto.sealed import BusKey, Opened, SealError, key_path
from runa.errors import UsageError
from runa.paths import Paths
from runa.protocol import secret_wire as wire
from runa.protocol import secrets as protocol
from runa.protocol.payloads import PayloadError
from runa.service import ServiceContext
from runa.splinter import Bus, Envelope, Fault
from runa.splinter import envelope as env_mod
from runa.splinter.errors import BadSchema, SplinterError, TtlExpired

NAME = protocol.COVEN
BUS = "coven"
REQUEST = protocol.SEALED_CONTEXTS["coven_request"]
REPLY = protocol.SEALED_CONTEXTS["coven_reply"]
EX_SOFTWARE = 70


class CovenDaemon:
    name = NAME

    def __init__(self, config: Config, stack: str, logger: logging.Logger, *,
                 paths: Paths | None = None, prctl: Prctl = libc_prctl,
                 ppid: Callable[[], int] = os.getppid, proc: Path = Path("/proc")) -> None:
        self.config = config
        self.stack = stack
        self.logger = logger
        self.paths = paths or Paths.for_stack(stack)
        self._prctl = prctl
        self._ppid = ppid
        self._proc = proc
        self.mode = Mode.SUPERVISOR
        self.problem = ""
        self._asking: dict[str, str | int] = {}
        self.vault = Vault(Location.for_stack(self.paths), audit=self._audit_sink())
        self.key: BusKey | None = None
        self.bus: Bus | None = None
        self.inbox: deque[Envelope] = deque()
        self._seen = bus_mod.RecentRequests()
        self._ctx: ServiceContext | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._prctl(PR_SET_DUMPABLE, 0)  # before any secret or key is in memory
        self.mode = mode_of(read_cgroup(os.getpid(), self._proc) or "")
        self.key = BusKey.load_or_create(key_path(self.paths.runtime))
        ctx.status("opening the vault")
        try:
            self.vault = Vault.open(self.vault.location, audit=self._audit_sink())
        except CovenError as error:  # altered, or its key file unusable: say so, keep serving
            self.problem = str(error)
            log.event(self.logger, "vault_unusable", f"the vault cannot be opened: {error}",
                      level=logging.ERROR, kind=type(error).__name__)
        self.bus = bus_mod.connect(self.config, self.stack, BUS)
        self.stats = self.bus.component_stats(NAME)
        self.queue = self.bus.queue(NAME, stats=self.stats, service=True)
        log.event(self.logger, "vault_opened", f"coven serves gilgul ({self.mode.value} "
                  f"mode); {self._status_line()}", mode=self.mode.value,
                  state=self.vault.state.value)
        self._say_status()

    def _audit_sink(self) -> Audit:
        return journal_audit(self.logger, lambda: self._asking)

    def step(self, timeout: float) -> None:
        self.inbox.extend(bus_mod.read_requests(
            self.queue, timeout, on_bad_schema=self._bad_schema, on_cancel=lambda _r: None,
            on_expired=self._expired, seen=self._seen, on_repeat=self._replayed))
        while self.inbox:
            self._handle(self.inbox.popleft())

    def stop(self) -> None:
        self.vault.lock(requester="coven")
        if self.key is not None:
            self.key.close()
        if self.bus is not None:
            self.queue.close()
            self.bus.close()

    def _status_line(self) -> str:
        if self.problem:
            return f"unusable: {self.problem}"
        state = self.vault.state
        if state is VaultState.ABSENT:
            return "no vault yet (the first set creates one with a key file)"
        mode = self._mode_name()
        if state is VaultState.LOCKED:
            return f"locked ({mode}): waiting for 'runa secret unlock'"
        return f"unlocked ({mode})"

    def _mode_name(self) -> str:
        try:
            mode = self.vault.status().mode
        except CovenError:
            return "unknown key mode"
        return "passphrase" if mode is KeyMode.PASSPHRASE else "key file"

    def _say_status(self) -> None:
        if self._ctx is not None:
            self._ctx.status(self._status_line())

    # -- answering -------------------------------------------------------------------------

    def _handle(self, request: Envelope) -> None:
        if request.type != "query":
            return
        assert self.key is not None
        try:
            opened = self.key.open(REQUEST, request.payload)
        except SealError as error:
            self._bad_schema(_bad(request, str(error)), request, kind="SealError")
            return
        try:
            self._serve(request, opened)
        finally:
            opened.wipe()
            self._asking = {}

    def _serve(self, request: Envelope, opened: Opened) -> None:
        fields = opened.fields
        op, name = fields.get("op"), fields.get("name")
        op_name = op if isinstance(op, str) else ""
        secret = name if isinstance(name, str) else ""
        holder = self._holder(request.reply_to)
        decision = self.identify(holder)
        if decision.allowed:
            decision = self._sent_by(request, holder)
        if not decision.allowed:
            self._refuse(request, op_name, secret, holder, decision)
            return
        spec = protocol.COVEN_OPS.get(op_name)
        try:
            if spec is None:
                raise _bad(request, f"unknown op {op!r}; coven answers "
                                    f"{', '.join(protocol.COVEN_OPS)}")
            try:
                requester = spec.read(fields, "for")
                pid = spec.read(fields, "pid")
                if any(f.name == "name" for f in spec.fields):
                    check_name(spec.read(fields, "name"))
                if any(f.name == "size" for f in spec.fields):
                    spec.read(fields, "size")
            except PayloadError as error:
                raise _bad(request, str(error)) from None
            self._asking = {"requester_pid": pid, "holder_pid": holder or 0}
            reply, value = self._answer(op_name, fields, opened.value, requester)
            self.problem = ""  # the vault answered: whatever made it unusable is gone
            self._reply(request, reply, value)
        except BadSchema as error:
            self._bad_schema(error, request)
        except CovenError as error:
            self._vault_fault(request, error)
        except Exception as error:  # answered, logged, and the loop goes on
            self.logger.exception("%s failed: %s", op_name, type(error).__name__)
            self._fail(request, Fault.INTERNAL_ERROR, f"{type(error).__name__}: coven failed",
                       "InternalError", EX_SOFTWARE)
        finally:
            self._say_status()

    def _answer(self, op: str, fields: dict[str, Any], value: bytearray,
                who: str) -> tuple[dict[str, Any], SecretBytes | None]:
        """The sealed reply's fields and value (``get``'s and ``create``'s secret, which the
        caller wipes) for ``op``."""
        vault = self.vault
        name = fields.get("name", "")
        if op == "get":
            return {"name": name}, vault.get(name, requester=who)
        if op == "create":
            size = fields.get("size")
            made, created = vault.get_or_create(
                name, protocol.CREATE_SIZE if size is None else size, requester=who)
            return {"name": name, "created": created}, made
        if op == "set":
            vault.set(name, value, requester=who)
            return {"name": name, "stored": True}, None
        if op == "rm":
            vault.remove(name, requester=who)
            return {"name": name, "removed": True}, None
        if op == "list":
            return {"secrets": [_listed(i) for i in vault.names(requester=who)]}, None
        if op == "rotate":
            mode = _key_mode(fields.get("mode"))
            key_id = vault.rotate(mode=mode, passphrase=value or None, requester=who)
            return {"key_id": key_id}, None
        if op == "unlock":
            vault.unlock(value or None, requester=who)
        elif op == "lock":
            vault.lock(requester=who)
        return self.describe(who), None

    def describe(self, who: str) -> dict[str, Any]:
        """What ``status`` (and ``lock``/``unlock``) answer: never a name or a value."""
        status = self.vault.status()
        unlocked = status.state is VaultState.UNLOCKED
        return {"state": status.state.value,
                "mode": status.mode.name.lower() if status.mode else None,
                "key_id": status.key_id,
                "argon2": ({"opslimit": status.argon2.opslimit,
                            "memlimit": status.argon2.memlimit} if status.argon2 else None),
                "secrets": len(self.vault.names(requester=who)) if unlocked else None,
                "dumpable": self._prctl(PR_GET_DUMPABLE, 0),
                "identity": self.mode.value}

    # -- identity ----------------------------------------------------------------------------

    def _holder(self, reply_to: str | None) -> int | None:
        assert self.bus is not None
        if not reply_to:
            return None
        try:
            return self.bus.queue_holder(reply_to)
        except SplinterError:
            return None

    def _sent_by(self, request: Envelope, holder: int | None) -> Decision:
        """Whether the kernel names ``holder`` (the reply queue's consumer) as the request's
        sender too, and still as the consumer (its pid not reused meanwhile)."""
        assert self.bus is not None
        sender = self.bus.request_sender(request.id)
        if sender != holder:
            return Decision(False, f"the request was sent by {_pid(sender)}, not by pid "
                                   f"{holder}, the consumer of its reply queue")
        if self._holder(request.reply_to) != holder:
            return Decision(False, f"pid {holder} stopped consuming the reply queue")
        return Decision(True, "")

    def _replayed(self, request: Envelope) -> None:
        self._refuse(request, "", "", self._holder(request.reply_to),
                     Decision(False, f"request id {request.id} was already read: a replay"))

    def identify(self, holder: int | None) -> Decision:
        """Whether ``holder`` is gilgul, from what the kernel says (``runa.coven.identity``)."""
        cgroup = read_cgroup(holder, self._proc) if holder and self.mode is Mode.SYSTEMD \
            else None
        return decide(holder, mode=self.mode, ppid=self._ppid(), holder_cgroup=cgroup)

    def _refuse(self, request: Envelope, op: str, secret: str, holder: int | None,
                decision: Decision) -> None:
        log.event(self.logger, "secret_refused",
                  f"refused {op or '?'} {secret or '-'}: {decision.why} (claims to be "
                  f"{request.sender!r})", level=logging.WARNING, op=op, secret=secret,
                  holder_pid=holder or 0, claimed_from=request.sender,
                  reply_to=request.reply_to or "", why=decision.why)
        if holder is not None:  # nobody holds the reply queue: nobody to tell
            self._fail(request, Fault.NOT_AUTHORIZED,
                       f"coven answers gilgul only: {decision.why}", "NotGilgul", wire.EX_NOPERM)

    # -- sending ---------------------------------------------------------------------------

    def _reply(self, request: Envelope, fields: dict[str, Any],
               value: SecretBytes | None) -> None:
        assert self.key is not None
        if value is None:
            payload = self.key.seal(REPLY, fields)
        else:
            with value:
                payload = self.key.seal(REPLY, fields, value.view())
        if request.reply_to:
            self._send(request.reply_to,
                       env_mod.response(request, NAME, payload, seq=0, eof=True))

    def _vault_fault(self, request: Envelope, error: CovenError) -> None:
        if isinstance(error, VaultAltered):
            self.problem = str(error)
        usage = isinstance(error, (UsageError, UnknownSecret))
        self._fail(request, Fault.BAD_SCHEMA if usage else Fault.INTERNAL_ERROR, str(error),
                   type(error).__name__, error.exit_code)

    def _fail(self, request: Envelope, code: Fault, message: str, kind: str,
              exit_code: int | None) -> None:
        envelope = env_mod.fault(code, message, sender=NAME, to=request.sender, id=request.id)
        envelope.payload["kind"] = kind
        if exit_code is not None:
            envelope.payload["exit_code"] = exit_code
        self.logger.info("request %s failed: %s", request.id, kind,
                         extra={"RUNA_EVENT": "request_failed"})
        if request.reply_to:
            self._send(request.reply_to, envelope)

    def _expired(self, request: Envelope, error: TtlExpired) -> None:
        if request.reply_to:
            self._send(request.reply_to, env_mod.error_reply(request, error, sender=NAME))

    def _bad_schema(self, error: BadSchema, request: Envelope | None = None, *,
                    kind: str = "BadSchema") -> None:
        self.logger.warning("bad request: %s", error.message, extra={"RUNA_EVENT": "bad_schema"})
        if request is not None:  # the bus counted the envelopes it could not read itself
            self.stats.incr("bad_schema")
        where = env_mod.reply_channel(request, error)
        if where:
            envelope = env_mod.error_reply(request, error, sender=NAME)
            envelope.payload["kind"] = kind
            envelope.payload["exit_code"] = wire.EX_DATAERR
            self._send(where, envelope)

    def _send(self, channel: str, envelope: Envelope) -> None:
        assert self.bus is not None
        try:
            self.bus.sender(channel, stats=self.stats).send(envelope)
        except SplinterError as error:
            self.logger.info("could not answer on %s: %s", channel, error)


def _pid(pid: int | None) -> str:
    return "no process the kernel can name" if pid is None else f"pid {pid}"


def _listed(info: SecretInfo) -> dict[str, Any]:
    return {"name": info.name, "size": info.size, "updated_ms": info.updated_ms}


def _key_mode(value: Any) -> KeyMode | None:
    if value is None:
        return None
    if value == "keyfile":
        return KeyMode.KEYFILE
    if value == "passphrase":
        return KeyMode.PASSPHRASE
    raise VaultModeError("'mode' must be keyfile or passphrase")


def _bad(request: Envelope, message: str) -> BadSchema:
    return BadSchema(message, id=request.id, sender=request.sender, reply_to=request.reply_to)


def create(config: Config, logger: logging.Logger, stack: str) -> CovenDaemon:
    return CovenDaemon(config, stack, logger)
