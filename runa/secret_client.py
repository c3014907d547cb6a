"""Asking gilgul's secrets broker (queue ``gilgul.secrets``), as ``runa secret`` does.

One sealed query, one sealed answer (``runa.protocol.secret_wire``). The broker knows who
asks by what the kernel says: this client claims each request's id while it waits
(``Bus.claim_request``) and holds its reply queue, opened here and kept for the client's
life (``runa.client.SealedClient``, which alethia's client is made of too). Nothing here
talks to coven or opens the vault.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from runa.client import SealedClient
from runa.crypto import sodium
from runa.crypto.sealed import BusKey, Opened
from runa.errors import RunaError
from runa.protocol import faults
from runa.protocol import secret_wire as wire
from runa.protocol.secrets import BROKER, BROKER_OPS, CREATE_SIZE, SEALED_CONTEXTS
from runa.splinter import Bus
from runa.splinter.errors import MessageTooLarge

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


class SecretsClient(SealedClient):
    """A private reply queue on the main bus and the stack's bus key."""

    queue = BROKER
    name = BROKER_NAME
    contexts = (SEALED_CONTEXTS["broker_request"], SEALED_CONTEXTS["broker_reply"])

    def __init__(self, bus: Bus, key: BusKey, client_name: str = "runa-secret",
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(bus, key, client_name, clock)

    def call(self, op: str, *, name: str | None = None, value: sodium.Buffer = b"",
             extra: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Opened:
        """The answer to ``op``, opened (the caller wipes it); SecretFault for a refusal,
        BrokerUnavailable when no broker answers within ``timeout`` seconds."""
        named = {} if name is None else {"name": name}
        return self.ask({**BROKER_OPS[op].request(**named), **(extra or {})}, value,
                        timeout=timeout)

    def create(self, name: str, size: int = CREATE_SIZE, *,
               timeout: float = 30.0) -> tuple[bytearray, bool]:
        """``name``'s value (made of ``size`` random bytes by coven if there is none yet) in
        a locked buffer the caller wipes, and whether coven made it now."""
        answer = self.call("create", name=name, extra={"size": size}, timeout=timeout)
        return sodium.lock_memory(answer.value), bool(answer.fields.get("created"))

    def unavailable(self, message: str) -> RunaError:
        return BrokerUnavailable(message)

    def refused(self, payload: dict[str, Any]) -> RunaError:
        return SecretFault(payload)

    def too_large(self, error: MessageTooLarge) -> RunaError:
        return SecretTooLarge(f"the request does not fit on the main bus ({error}): a "
                              "smaller value, or a larger bus.envelope_max_bytes")
