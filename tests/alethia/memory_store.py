"""An in-memory stand-in for ``runa.alethia.store.Store``: the daemon's tests of what is the
daemon's alone (sealing, paging, faults, waiting for keys) run on it as well as on the real
store, and it can fail as the real one rarely does (a full disk)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from runa.alethia.store import Durability, Entry, Keys, Record, StoreFull, UnknownRecord, WrongKey


class MemoryStore:
    """The store's API over a dict; ``full`` makes appends fail as on a full disk."""

    def __init__(self, keys: Keys, durability: Durability | None = None) -> None:
        self.keys = keys
        self.durability = durability or Durability()
        self.records: dict[str, Record] = {}
        self.pending: list[str] = []
        self.oldest: float | None = None
        self.flushes = 0
        self.closed = False
        self.full = False
        self.rotated: list[int] = []

    def append(self, kind: str, body: Mapping[str, Any], *, at: float | None = None) -> str:
        if self.full:
            raise StoreFull("no space left on the device: the record was not written")
        at = time.time() if at is None else at
        day = time.strftime("%Y-%m-%d", time.gmtime(at))
        record_id = f"{day}/{sum(1 for r in self.records if r.startswith(day)) + 1}"
        entry = Entry(record_id, at, kind, body.get("conversation"), body.get("persona"),
                      source=body.get("source") if kind == "document" else None)
        self.records[record_id] = Record(entry, dict(body))
        self.pending.append(record_id)
        self.oldest = self.oldest or time.monotonic()
        return record_id

    def flush(self) -> None:
        self.pending.clear()
        self.oldest = None
        self.flushes += 1

    def due(self) -> float | None:
        if self.oldest is None:
            return None
        if len(self.pending) >= self.durability.records:
            return 0.0
        return max(0.0, self.oldest + self.durability.ms / 1000 - time.monotonic())

    def entries(self, *, since: float | None = None, conversation: str | None = None,
                after: str | None = None) -> Iterator[Entry]:
        ids = list(self.records)
        start = ids.index(after) + 1 if after in self.records else 0
        for record_id in ids[start:]:
            entry = self.records[record_id].entry
            if since is not None and entry.time < since:
                continue
            if conversation is not None and entry.conversation != conversation:
                continue
            yield entry

    def read(self, record_id: str) -> Record:
        record = self.records.get(record_id)
        if record is None or record.entry.forgotten:
            raise UnknownRecord(f"no record {record_id}")
        return record

    def live_ids(self) -> Iterator[str]:
        return iter([i for i, r in self.records.items()
                     if not r.entry.forgotten and i not in self.pending])

    def record_hash(self, record_id: str) -> bytes | None:
        record = self.records.get(record_id)
        if record is None or record.entry.forgotten or record_id in self.pending:
            return None
        return hashlib.blake2b(json.dumps([record_id, record.body], sort_keys=True).encode(),
                               digest_size=8).digest()

    def forget(self, record_id: str) -> None:
        record = self.read(record_id)
        entry = record.entry
        self.records[record_id] = Record(Entry(entry.id, entry.time, entry.kind,
                                               entry.conversation, entry.persona, True))

    def forget_conversation(self, conversation: str) -> list[str]:
        ids = [e.id for e in self.entries(conversation=conversation) if not e.forgotten]
        for record_id in ids:
            self.forget(record_id)
        return ids

    def rotate(self, version: int, key: bytearray) -> None:
        assert self.keys.memory[version] is key
        self.rotated.append(version)

    def status(self) -> Mapping[str, Any]:
        return {"records": sum(not r.entry.forgotten for r in self.records.values()),
                "days": len({r.split("/")[0] for r in self.records}), "bytes": 0,
                "key_version": max(self.keys.memory), "public_key": "00" * 32,
                "unsigned": len(self.pending),
                "durability": {"records": self.durability.records, "ms": self.durability.ms}}

    def close(self) -> None:
        self.flush()
        self.closed = True


class MemoryStores:
    """Opens one ``MemoryStore`` per root, as ``Store.open`` opens the files under it; keys
    other than the first ones a root was opened with are ``WrongKey``."""

    def __init__(self) -> None:
        self.opened: dict[Path, MemoryStore] = {}
        self.first_key: dict[Path, bytes] = {}

    def __call__(self, root: Path, keys: Keys) -> MemoryStore:
        first = self.first_key.setdefault(root, bytes(keys.memory[min(keys.memory)]))
        if bytes(keys.memory[min(keys.memory)]) != first:
            raise WrongKey(f"the memory key does not open the day keys under {root}")
        store = self.opened.get(root)
        if store is None or store.closed:
            previous = store
            store = MemoryStore(keys)
            if previous is not None:
                store.records = previous.records
            self.opened[root] = store
        return store
