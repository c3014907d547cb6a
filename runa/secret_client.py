"""Asking gilgul's secrets broker (queue ``gilgul.secrets``), as ``runa secret`` does.

One sealed query, one sealed answer (``runa.protocol.secret_wire``). The broker knows who
asks by what the kernel says: this client claims each request's id while it waits
(``Bus.claim_request``) and holds its reply queue, opened here and kept for the client's
life. Nothing here talks to coven or opens the vault.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from runa.crypto import sodium
from runa.crypto.sealed import BusKey, Opened
from runa.errors import RunaError
from runa.protocol import faults
from runa.protocol import secret_wire as wire
from runa.protocol.secrets import BROKER, BROKER_OPS, CREATE_SIZE, SEALED_CONTEXTS
from runa.splinter import Bus
from runa.splinter import envelope as env_mod
from runa.splinter.errors import BadSchema, ChannelNotFound, MessageTooLarge, SplinterError

#: How often a waiting request looks whether the broker is still alive.
LOOK_S = 0.25
BROKER_NAME = "gilgul's secrets broker"


class BrokerUnavailable(RunaError):
    """Nobody serves ``gilgul.secrets``: gilgul (or ``runa up``) is not running."""

    exit_code = wire.EX_UNAVAILABLE


class SecretTooLarge(RunaError):
    """A value that, sealed, is larger than the main bus carries in one envelope."""

    exit_code = wire.EX_USAGE


class SecretFault(RunaError):
    """The broker (or coven, through it) refused or failed; its message names no value."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.payload = dict(payload)
        self.exit_code = faults.exit_status(payload)
        super().__init__(str(payload.get("message", "failed")))

    @property
    def locked(self) -> bool:
        return wire.is_locked(self.payload)


class SecretsClient:
    """A private reply queue on the main bus and the stack's bus key."""

    def __init__(self, bus: Bus, key: BusKey, client_name: str = "runa-secret",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.key = key
        self.clock = clock
        self.client_name = client_name
        self.replies = bus.queue(f"{client_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")

    def close(self) -> None:
        self.replies.close()

    def __enter__(self) -> SecretsClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def call(self, op: str, *, name: str | None = None, value: sodium.Buffer = b"",
             extra: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Opened:
        """The answer to ``op``, opened (the caller wipes it); SecretFault for a refusal,
        BrokerUnavailable when no broker answers within ``timeout`` seconds."""
        named = {} if name is None else {"name": name}
        fields = {**BROKER_OPS[op].request(**named), **(extra or {})}
        query = env_mod.query(self.client_name, BROKER,
                              self.key.seal(SEALED_CONTEXTS["broker_request"], fields, value),
                              reply_to=self.replies.name, ttl_ms=max(1, int(timeout * 1000)))
        with self.bus.claim_request(query.id):
            return self._ask(query, timeout)

    def create(self, name: str, size: int = CREATE_SIZE, *,
               timeout: float = 30.0) -> tuple[bytearray, bool]:
        """``name``'s value (made of ``size`` random bytes by coven if there is none yet) in
        a locked buffer the caller wipes, and whether coven made it now."""
        answer = self.call("create", name=name, extra={"size": size}, timeout=timeout)
        return sodium.lock_memory(answer.value), bool(answer.fields.get("created"))

    def _ask(self, query: env_mod.Envelope, timeout: float) -> Opened:
        try:
            self.bus.sender(BROKER).send(query)
        except ChannelNotFound:
            raise BrokerUnavailable(
                f"{BROKER_NAME} is not running (no '{BROKER}' queue on the bus): start Runa "
                "with 'systemctl --user start runa.target' or 'runa up -d'") from None
        except MessageTooLarge as error:
            raise SecretTooLarge(f"the request does not fit on the main bus ({error}): a "
                                 "smaller value, or a larger bus.envelope_max_bytes") from None
        except SplinterError as error:
            raise BrokerUnavailable(f"{BROKER_NAME} could not be asked: {error}") from None
        deadline = self.clock() + timeout
        while (left := deadline - self.clock()) > 0:
            try:
                answer = self.replies.recv(min(left, LOOK_S))
            except BadSchema:
                continue
            if answer is None:
                self._check_alive()
                continue
            if answer.id != query.id:
                continue
            if answer.type == "error":
                raise SecretFault(answer.payload)
            return self.key.open(SEALED_CONTEXTS["broker_reply"], answer.payload)
        raise BrokerUnavailable(f"{BROKER_NAME} did not answer within {timeout:g} s "
                                "(see 'runa status' and the journal)")

    def _check_alive(self) -> None:
        owner = self.bus.queue_owner(BROKER)
        if owner is None or not owner.alive:
            raise BrokerUnavailable(
                f"{BROKER_NAME} stopped (gilgul, or 'runa up', is not running); start Runa "
                "with 'systemctl --user start runa.target' or 'runa up -d'")
