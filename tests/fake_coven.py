"""A small stand-in for coven's daemon, for the broker's tests until the real one is merged.

It consumes the queue ``coven`` on a coven bus, opens each sealed request, records what it
was asked (op, name, ``for``, ``pid``, the value bytes) for the test, and answers as
``runa.protocol.secret_wire`` says coven does: sealed replies, plain error envelopes with
``exit_code`` (69 for a locked vault).
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

from runa.crypto.sealed import BusKey
from runa.protocol import secret_wire as wire
from runa.protocol.secrets import COVEN, SEALED_CONTEXTS
from runa.splinter import Bus, Envelope
from runa.splinter import envelope as env_mod

LOCKED_MESSAGE = "the vault /x/coven/vault is locked; unlock it with 'runa secret unlock'"


class FakeVault:
    """What the fake coven answers: an in-memory vault, locked or not."""

    def __init__(self, locked: bool = False, secrets: dict[str, bytes] | None = None) -> None:
        self.locked = locked
        self.secrets = dict(secrets or {})

    def answer(self, op: str, fields: dict[str, Any], value: bytes
               ) -> tuple[dict[str, Any], bytes] | dict[str, Any]:
        """(sealed fields, value bytes) or an error payload."""
        if op == "status":
            return ({wire.STATE: wire.LOCKED, wire.MODE: wire.PASSPHRASE} if self.locked else
                    {wire.STATE: wire.UNLOCKED, wire.MODE: wire.KEYFILE,
                     wire.COUNT: len(self.secrets)}), b""
        if self.locked and op != "unlock":
            return {"code": 5000, "name": "INTERNAL_ERROR", "message": LOCKED_MESSAGE,
                    wire.KIND: wire.LOCKED_KIND, wire.EXIT_CODE: wire.EX_UNAVAILABLE}
        name = fields.get("name")
        if op == "get":
            if name not in self.secrets:
                return {"code": 1000, "name": "BAD_SCHEMA", wire.EXIT_CODE: wire.EX_NOINPUT,
                        wire.KIND: "UnknownSecret",
                        "message": f"no secret {name!r} in the vault"}
            return {"name": name}, self.secrets[name]
        if op == "create":
            created = name not in self.secrets
            if created:
                self.secrets[str(name)] = os.urandom(int(fields.get("size") or 32))
            return {"name": name, "created": created}, self.secrets[str(name)]
        if op == "set":
            self.secrets[str(name)] = value
            return {"name": name}, b""
        if op == "rm":
            self.secrets.pop(str(name), None)
            return {"name": name}, b""
        if op == "list":
            return {wire.SECRETS: [{wire.ENTRY_NAME: n, wire.ENTRY_SIZE: len(v),
                                    wire.ENTRY_CHANGED: 0} for n, v in
                                   sorted(self.secrets.items())]}, b""
        if op in ("lock", "unlock"):
            self.locked = op == "lock"
            return {wire.STATE: wire.LOCKED if self.locked else wire.UNLOCKED}, b""
        return {}, b""


def serve(coven_path: str, key_file: str, vault: FakeVault,
          asked: multiprocessing.Queue[dict[str, Any]],
          ready: Any, done: Any) -> None:
    """Serve ``coven`` until ``done`` is set (run in a child process)."""
    key = BusKey.load_or_create(Path(key_file))
    with Bus.open(coven_path) as bus:
        queue = bus.queue(COVEN, service=True)
        ready.set()
        while not done.is_set():
            request = queue.recv(0.1)
            if request is None or not request.reply_to:
                continue
            opened = key.open(SEALED_CONTEXTS["coven_request"], request.payload)
            fields, value = opened.fields, bytes(opened.value)
            asked.put({**fields, "value": value, "from": request.sender})
            result = vault.answer(str(fields.get("op")), fields, value)
            if isinstance(result, dict):
                reply = Envelope("error", COVEN, request.sender, result, id=request.id)
            else:
                reply = env_mod.response(request, COVEN, key.seal(
                    SEALED_CONTEXTS["coven_reply"], result[0], result[1]), eof=True)
            bus.sender(request.reply_to).send(reply)
        queue.close()
