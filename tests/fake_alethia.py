"""A stand-in for the alethia daemon: it serves the ``alethia`` queue with sealed payloads,
as docs/protocol.md's ops say, and keeps its records in memory, so ``runa memory`` and the
chats' recording are tested without the store or the daemon."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runa.crypto.sealed import BusKey
from runa.protocol import memory as proto
from runa.splinter import Bus
from runa.splinter import envelope as env_mod


@dataclass
class FakeAlethia:
    bus_path: str
    key_file: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    asked: list[dict[str, Any]] = field(default_factory=list)
    page: int = 2  # small pages, so the clients must follow 'next'
    key_version: int = 1
    hung: bool = False  # alive, holding its queue, but reading nothing
    _stop: threading.Event = field(default_factory=threading.Event)

    def serve(self, ready: threading.Event) -> None:
        key = BusKey.load_or_create(self.key_file)
        with Bus.open(self.bus_path) as bus:
            queue = bus.queue(proto.SERVICE)
            ready.set()
            try:
                self._loop(bus, queue, key)
            finally:
                queue.close()

    def _loop(self, bus: Bus, queue: Any, key: BusKey) -> None:
        while not self._stop.is_set():
            if self.hung:
                time.sleep(0.02)
                continue
            request = queue.recv(0.05)
            if request is None or request.reply_to is None or self.hung:
                continue
            fields = key.open(proto.SEALED_CONTEXTS["request"], request.payload).fields
            self.asked.append(fields)
            try:
                answer = env_mod.Envelope(
                    "response", proto.SERVICE, request.reply_to,
                    key.seal(proto.SEALED_CONTEXTS["reply"], self.answer(fields)),
                    id=request.id, eof=True)
            except LookupError as error:
                answer = env_mod.Envelope(
                    "error", proto.SERVICE, request.reply_to,
                    {"code": 1000, "name": "BAD_SCHEMA", "kind": "UnknownRecord",
                     "exit_code": 66, "message": str(error)}, id=request.id)
            bus.sender(request.reply_to).send(answer)

    def answer(self, fields: dict[str, Any]) -> dict[str, Any]:
        op = fields["op"]
        if op == "append":
            day = time.strftime("%Y-%m-%d", time.gmtime())
            record_id = f"{day}/{len(self.records) + 1}"
            self.records.append({"id": record_id, "time": time.time(), "kind": "turn",
                                 "body": {k: v for k, v in fields.items() if k != "op"}})
            return {proto.ID: record_id}
        if op in ("list", "export"):
            chosen = [r for r in self.records if "forgotten" not in r
                      and fields.get("conversation") in (None, r["body"]["conversation"])
                      and r["time"] >= fields.get("since", 0)]
            start = next((n + 1 for n, r in enumerate(chosen) if r["id"] == fields.get("after")),
                         0)
            page = chosen[start:start + self.page]
            more = start + self.page < len(chosen)
            items = ([{"id": r["id"], "time": r["time"], "kind": r["kind"],
                       "conversation": r["body"]["conversation"],
                       "persona": r["body"].get("persona")} for r in page]
                     if op == "list" else page)
            return {proto.ENTRIES if op == "list" else proto.RECORDS: items,
                    proto.NEXT: page[-1]["id"] if more else None}
        if op == "show":
            found = [r for r in self.records if r["id"] == fields["id"] and "forgotten" not in r]
            if not found:
                raise LookupError(f"no record {fields['id']}")
            return {proto.RECORD: found[0]}
        if op == "forget":
            ids = [r["id"] for r in self.records if "forgotten" not in r and (
                r["id"] == fields.get("id")
                or r["body"]["conversation"] == fields.get("conversation"))]
            if not ids:
                raise LookupError("nothing to forget")
            for record in self.records:
                if record["id"] in ids:
                    record["forgotten"] = True
            return {proto.IDS: ids}
        if op == "rotate":
            self.key_version += 1
            return {"key_version": self.key_version}
        if op == "status":
            return {"records": len(self.records), "days": 1, "bytes": 123,
                    "key_version": self.key_version, "public_key": "ab" * 32, "unsigned": 0,
                    "durability": {"records": 64, "ms": 200}, "recording": True}
        return {}  # sign, reload

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def running(bus_path: str, key_file: Path) -> Iterator[FakeAlethia]:
    fake = FakeAlethia(bus_path, key_file)
    ready = threading.Event()
    thread = threading.Thread(target=fake.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(10), "the fake alethia did not start"
    try:
        yield fake
    finally:
        fake.stop()
        thread.join(10)
