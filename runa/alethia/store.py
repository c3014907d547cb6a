"""The store: day files of encrypted records under a hash chain, signed by day (CONTRACT).

This module's names and signatures are the contract the daemon and the CLI are written
against. Layout under ``root`` (``Paths.data / "alethia"``; docs/alethia.md is the
reference):

- ``alethia.json``: the format and the Ed25519 public key (hex), so ``verify`` needs no
  secret; ``lock``: the writer's flock;
- ``days/YYYY-MM-DD.key``: the day's random data key, wrapped (XChaCha20-Poly1305,
  ``runa.alethia.keyfile``) by the memory key of the version it names (``Keys.memory``),
  so rotating the memory key re-wraps these small files and re-encrypts nothing (the
  chain and the signatures stay);
- ``days/YYYY-MM-DD.log``: the day's lines (``runa.alethia.dayfile``): a header naming the
  previous day's head, each record encrypted on its own under the day key (a fresh nonce;
  its day and index authenticated), and a signature line after every durable batch;
- a hash chain over the records' ciphertext hashes (``runa.alethia.chain``): a forgotten
  record keeps its hash, so the chain still verifies.

``verify`` (``runa.alethia.verify``) and ``snapshot``/``restore`` (``runa.alethia.snapshot``)
are exported from here, with the store.

Durability: ``append`` queues; the batch is written with one ``write``, signed and fsynced
once ``Durability.records`` records are pending or the oldest is ``Durability.ms`` old (at
the next ``append``, or when the owner's loop calls ``flush`` at ``due()``). An unclean stop
loses at most the pending batch: fewer than ``records`` records, none older than ``ms``
while the owner honours ``due()``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from runa.alethia import chain, dayfile, files, keyfile, layout
from runa.alethia.errors import KeyMissing, StoreError, StoreFull, UnknownRecord, WrongKey
from runa.alethia.layout import DAYS, META
from runa.alethia.model import Durability, Entry, Keys, Problem, Record, Report
from runa.alethia.snapshot import restore, snapshot
from runa.alethia.verify import verify
from runa.crypto import sodium
from runa.log import event

__all__ = ["MEMORY_KEY", "SIGNING_KEY", "Durability", "Entry", "KeyMissing", "Keys", "Problem",
           "Record", "Report", "Store", "StoreError", "StoreFull", "UnknownRecord", "WrongKey",
           "public_key_of", "restore", "snapshot", "verify"]

#: coven's names: the memory key of version N (32 random bytes) and the signing seed.
MEMORY_KEY = "alethia.memory_key.v{version}"
SIGNING_KEY = "alethia.signing_key"

#: Bytes of a record's hash ``record_hash`` gives (what the search index's rows keep).
HASH_PREFIX = 8
TOMBSTONE = "tombstone"  # the kind of the record a forget appends to today's chain
SHIPPED_DURABILITY = Durability()
_log = logging.getLogger(__name__)


def day_of(moment: float) -> str:
    """The UTC day of a Unix time, as a day file names it."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def parse_id(record_id: str) -> tuple[str, int]:
    """A record id's day and index: exactly ``YYYY-MM-DD/N`` (ASCII, N from 1), so an id
    has one spelling."""
    day, _, index = record_id.partition("/")
    try:
        if dayfile.RECORD_ID.fullmatch(record_id) is None:
            raise ValueError(record_id)
        date.fromisoformat(day)  # the pattern fixed its shape: this checks the date
    except ValueError:
        raise UnknownRecord(f"{record_id!r} is not a record id (YYYY-MM-DD/N)") from None
    return day, int(index)


def public_key_of(seed: bytearray) -> bytes:
    """The Ed25519 public key of the signing seed: the key ``verify`` and ``restore`` trust,
    since ``alethia.json`` can be rewritten by whoever writes the files."""
    public, secret = sodium.sign_keypair(seed)
    sodium.wipe(secret)
    return public


# -- files ------------------------------------------------------------------------------------

@dataclass
class _Day:
    """What the open store keeps of one day: its key, chain end and record offsets."""

    name: str
    key: bytearray
    version: int
    prev: bytes
    head: bytes
    count: int = 0
    signed: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    forgotten: set[int] = field(default_factory=set)
    forgets: dict[int, str] = field(default_factory=dict)  # tombstone record -> id it names
    hashes: bytearray = field(default_factory=bytearray)  # HASH_PREFIX bytes a record, from 1
    written: bool = False  # the log file (and its header) exists

    @property
    def log(self) -> str:
        return f"{self.name}.log"

    def live(self, index: int) -> bool:
        """Whether record ``index`` is on disk and not forgotten."""
        return index in self.offsets and index not in self.forgotten

    def set_hash(self, index: int, digest: bytes) -> None:
        """Keep the first bytes of record ``index``'s hash (8 bytes a record, not a dict's
        hundred: the search index checks its rows against them)."""
        end = index * HASH_PREFIX
        if len(self.hashes) < end:
            self.hashes.extend(bytes(end - len(self.hashes)))
        self.hashes[end - HASH_PREFIX:end] = digest[:HASH_PREFIX]

    def hash_of(self, index: int) -> bytes:
        return bytes(self.hashes[(index - 1) * HASH_PREFIX:index * HASH_PREFIX])

    def index_lines(self, scan: dayfile.Scan) -> None:
        """Where each record's line starts, from a scan of the day's file."""
        for line in scan.records():
            if line.fields is not None:
                self.offsets[int(line.fields["i"])] = line.offset
                self.set_hash(int(line.fields["i"]), line.hexes("h"))


class Store:
    """The open store: one writer (the daemon) at a time, under a lock file."""

    def __init__(self, root: Path, keys: Keys, public: bytes, secret: bytearray, lock: int,
                 clock: Callable[[], float], durability: Durability) -> None:
        self.root = root
        # The store's own map of the caller's buffers: rotate adds to it, not to the
        # caller's Keys (the caller still wipes every key it gave).
        self.keys = Keys(memory=dict(keys.memory), signing_seed=keys.signing_seed)
        self.public = public
        self._secret = secret
        self._lock: int | None = lock
        self._clock = clock
        self.durability = durability
        self._days: dict[str, _Day] = {}
        self._pending: list[bytes] = []
        self._pending_since: float | None = None
        self._durable: tuple[int, bytes] | None = None  # the current day's (count, head) on disk

    @classmethod
    def open(cls, root: Path, keys: Keys, *, clock: Callable[[], float] = time.time,
             durability: Durability = SHIPPED_DURABILITY) -> Store:
        """Open (or create) the store at ``root``: a torn tail is cut (and said), day keys
        are opened with ``keys`` (``WrongKey`` if they do not open them)."""
        if not keys.memory:
            raise StoreError("no memory key given")
        (root / DAYS).mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = files.lock(root)
        try:
            store = cls._checked(root, keys, lock, clock, durability)
        except BaseException:
            os.close(lock)
            raise
        return store

    @classmethod
    def _checked(cls, root: Path, keys: Keys, lock: int, clock: Callable[[], float],
                 durability: Durability) -> Store:
        public, secret = sodium.sign_keypair(keys.signing_seed)
        stored = layout.read_public_key(root)
        if stored is None and any((root / DAYS).iterdir()):
            sodium.wipe(secret)
            raise StoreError(f"{root}: day files without {META}: not a store this opens")
        if stored is not None and not sodium.equal(stored, public):
            sodium.wipe(secret)
            raise WrongKey(f"{root / META}: the signing key is not this store's")
        store = cls(root, keys, public, secret, lock, clock, durability)
        opened: dict[str, tuple[bytearray, int]] = {}
        try:
            for path in sorted((root / DAYS).glob("*.key")):
                opened[path.stem] = keyfile.unwrap(path, keys)
            missing = [day for day in layout.day_names(root) if day not in opened]
            if missing:
                raise StoreError(f"{root / DAYS}: day {missing[0]} has records but no key file")
            # Everything is checked: from here on the store may write.
            if stored is None:
                files.replace(root / META, json.dumps(
                    {"format": dayfile.FORMAT, "public_key": public.hex()}).encode() + b"\n")
            files.remove_temporaries(root / DAYS)
            newest = max(opened, default="")
            for name, (key, version) in opened.items():
                store._load_day(name, key, version, newest=name == newest)
            store._hide_forgotten()
            shutil.rmtree(layout.old(root), ignore_errors=True)  # a restore's old store: not needed
        except BaseException:
            for key, _version in opened.values():
                sodium.wipe(key)
            store._lock = None  # open() releases it
            store._wipe()
            raise
        return store

    def _load_day(self, name: str, key: bytearray, version: int, *, newest: bool) -> None:
        """Load one day. Only the newest day can have a torn tail, and only what follows its
        last signature that holds is cut; damage anywhere else is left for ``verify`` to
        name, never cut (a ``StoreError`` where the store cannot go on from it)."""
        path = self.root / DAYS / f"{name}.log"
        if not path.exists():
            if newest:  # a key written, the day's first batch never: start it again
                (self.root / DAYS / f"{name}.key").unlink()
            else:
                event(_log, "day_without_log", f"alethia: day {name} has a key file but no "
                      f"log; the key is kept (`runa memory verify`)", level=logging.WARNING,
                      day=name)
            sodium.wipe(key)
            return
        data = path.read_bytes()
        scan = dayfile.scan(data)
        if newest:
            end = _torn_start(name, scan, data, self.public)
            if end == 0:  # no batch of this day was written whole
                path.unlink()
                (self.root / DAYS / f"{name}.key").unlink()
                sodium.wipe(key)
                event(_log, "torn_tail", f"alethia: removed day {name}, whose first batch a "
                      f"crash interrupted ({len(data)} bytes)", level=logging.WARNING,
                      day=name, bytes=len(data))
                return
            if end < len(data):
                files.cut(path, end)
                event(_log, "torn_tail", f"alethia: cut {len(data) - end} bytes after day "
                      f"{name}'s last signed batch (a batch a crash interrupted)",
                      level=logging.WARNING, day=name, bytes=len(data) - end)
                scan = dayfile.scan(data[:end])
        header = scan.header
        prev = header.hexes("prev") if header is not None else chain.GENESIS
        day = _Day(name, key, version, prev, prev, written=True)
        day.index_lines(scan)
        for line in scan.records():
            if line.fields is None:
                continue
            index = int(line.fields["i"])
            if "forgot" in line.fields:
                day.forgotten.add(index)
            if "forgets" in line.fields:
                day.forgets[index] = line.fields["forgets"]
            if index > day.count:
                day.count, day.head = index, line.hexes("l")
        signatures = [line for line in scan.signatures() if line.fields is not None]
        if signatures:
            last = signatures[-1]
            day.signed = int(last.fields["count"]) if last.fields else 0
            if newest:  # go on from the head signed last (it matches the chain: checked)
                day.count, day.head = day.signed, last.hexes("head")
        if not day.offsets:
            sodium.wipe(key)
            raise StoreError(f"{path}: day {name} holds no records (`runa memory verify`)")
        self._days[name] = day
        self._durable = (day.count, day.head)

    def _hide_forgotten(self) -> None:
        """A record a tombstone names stays forgotten, even if an old copy of its line was
        put back (``verify`` names that)."""
        for day in self._days.values():
            for named in day.forgets.values():
                name, index = parse_id(named)
                if name in self._days:
                    self._days[name].forgotten.add(index)

    # -- writing ------------------------------------------------------------------------------

    @property
    def _current(self) -> _Day | None:
        return self._days[next(reversed(self._days))] if self._days else None

    def _day_for(self, now: float) -> _Day:
        current = self._current
        name = day_of(now)
        if current is not None and name <= current.name:
            return current  # the same day, or a clock that went back: the latest day
        if current is not None:
            self.flush()  # the day ends: its last batch written and signed
        version = max(self.keys.memory)
        key = sodium.new_key()
        try:
            files.replace(self.root / DAYS / f"{name}.key",
                          keyfile.wrap(name, version, key, self.keys.memory[version]))
        except StoreError:
            sodium.wipe(key)
            raise
        prev = current.head if current is not None else chain.GENESIS
        day = _Day(name, key, version, prev, prev)
        self._days[name] = day
        self._durable = (0, prev)
        return day

    def append(self, kind: str, body: Mapping[str, Any], *, at: float | None = None) -> str:
        """Encrypt, chain and queue one record; its id. Durable within ``durability``."""
        if kind == TOMBSTONE:
            raise StoreError("tombstones are written by forget")
        return self._append(kind, body, at)

    def _append(self, kind: str, body: Mapping[str, Any], at: float | None,
                forgets: str | None = None) -> str:
        self._check_open()
        now = self._clock()
        day = self._day_for(now)
        index = day.count + 1
        plaintext = json.dumps({"time": now if at is None else at, "kind": kind,
                                "body": dict(body)}, separators=(",", ":")).encode()
        nonce = sodium.random_bytes(sodium.NONCE_BYTES)
        ciphertext = sodium.encrypt(day.key, nonce, plaintext,
                                    chain.record_associated(day.name, index))
        digest = chain.record_hash(nonce, ciphertext, forgets)
        link = chain.link(day.head, day.name, index, digest)
        self._pending.append(dayfile.record(index, digest, link, nonce, ciphertext, forgets))
        if forgets is not None:
            day.forgets[index] = forgets
        day.set_hash(index, digest)  # used once written (its offset says so)
        day.count, day.head = index, link
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        due = self.due()
        if len(self._pending) >= self.durability.records or (due is not None and due <= 0):
            self.flush()
        return f"{day.name}/{index}"

    def flush(self) -> None:
        """Write and fsync what is pending, and sign each touched day's head."""
        self._check_open()
        day = self._current
        if day is None or (not self._pending and day.signed == day.count):
            return
        first = day.count - len(self._pending) + 1
        batch = b"".join(self._pending)
        signature = sodium.sign(self._secret, chain.head_message(day.name, day.count, day.head))
        prefix = b"" if day.written else dayfile.header(day.name, day.prev)
        data = prefix + batch + dayfile.signature(day.count, day.head, signature)
        try:
            start = files.append(self.root / DAYS / day.log, data)
        except StoreError as error:
            lost = len(self._pending)
            self._pending, self._pending_since = [], None
            day.count, day.head = self._durable or (0, day.prev)
            event(_log, "append_failed", f"alethia: {lost} records not written",
                  level=logging.ERROR, records=lost, full=isinstance(error, StoreFull))
            if not lost:
                raise
            raise type(error)(f"{error}; records {day.name}/{first} to {day.name}/"
                              f"{first + lost - 1} were not written: those ids are void (the "
                              f"next records take them)") from None
        offset = start + len(prefix)
        for index, line in enumerate(self._pending, start=first):
            day.offsets[index] = offset
            offset += len(line)
        day.written, day.signed = True, day.count
        self._pending, self._pending_since = [], None
        self._durable = (day.count, day.head)

    def due(self) -> float | None:
        """Seconds until pending appends must be flushed (None when nothing is pending):
        the daemon's loop waits at most this long."""
        if self._pending_since is None:
            return None
        return max(0.0, self._pending_since + self.durability.ms / 1000 - time.monotonic())

    # -- reading ------------------------------------------------------------------------------

    def _lines(self, day: _Day) -> dict[int, dayfile.Line]:
        scan = dayfile.scan((self.root / DAYS / day.log).read_bytes())
        return {int(line.fields["i"]): line for line in scan.records()
                if line.fields is not None}

    def _line_at(self, day: _Day, index: int) -> dayfile.Line | None:
        with (self.root / DAYS / day.log).open("rb") as handle:
            handle.seek(day.offsets[index])
            lines = dayfile.scan(handle.readline()).lines
        return lines[0] if lines and lines[0].kind == "rec" else None

    def _decrypt(self, day: _Day, index: int, line: dayfile.Line) -> dict[str, Any]:
        plaintext = sodium.decrypt_into(day.key, line.blob("n"), line.blob("c"),
                                        chain.record_associated(day.name, index))
        if plaintext is None:
            raise StoreError(f"record {day.name}/{index} does not decrypt: altered "
                             f"(`runa memory verify` names it)")
        try:
            return dict(json.loads(plaintext))
        finally:
            sodium.wipe(plaintext)

    def _records(self, since: float | None) -> Iterator[tuple[str, dict[str, Any]]]:
        self.flush()
        first = day_of(since) if since is not None else ""
        for day in list(self._days.values()):
            if day.name < first or not day.written:
                continue
            for index, line in sorted(self._lines(day).items()):
                if index in day.forgotten or line.fields is None or "forgot" in line.fields:
                    continue
                yield f"{day.name}/{index}", self._decrypt(day, index, line)

    @staticmethod
    def _entry(record_id: str, fields: Mapping[str, Any]) -> Entry:
        body = fields.get("body") or {}
        return Entry(record_id, float(fields["time"]), str(fields["kind"]),
                     body.get("conversation"), body.get("persona"),
                     source=body.get("source") if fields["kind"] == "document" else None)

    def entries(self, *, since: float | None = None, conversation: str | None = None,
                after: str | None = None) -> Iterator[Entry]:
        """Every record's entry, oldest first, filtered (forgotten records and the
        tombstones forgetting leaves are not shown). Reading writes what is pending first."""
        self._check_open()
        position = parse_id(after) if after is not None else None
        for record_id, fields in self._records(since):
            entry = self._entry(record_id, fields)
            if (entry.kind == TOMBSTONE or (since is not None and entry.time < since)
                    or (conversation is not None and entry.conversation != conversation)
                    or (position is not None and parse_id(record_id) <= position)):
                continue
            yield entry

    def read(self, record_id: str) -> Record:
        """One record decrypted (``UnknownRecord`` if absent or forgotten)."""
        self._check_open()
        name, index = parse_id(record_id)
        self.flush()
        day = self._days.get(name)
        if day is None or not day.live(index):
            raise UnknownRecord(f"no record {record_id}")
        line = self._line_at(day, index)
        if line is None or line.fields is None or "forgot" in line.fields:
            raise UnknownRecord(f"no record {record_id}")
        fields = self._decrypt(day, index, line)
        return Record(self._entry(record_id, fields), fields.get("body") or {})

    def live_ids(self) -> Iterator[str]:
        """The ids of the records on disk that are neither forgotten nor tombstones, without
        decrypting them (what the search index must hold)."""
        self._check_open()
        for day in list(self._days.values()):
            for index in sorted(day.offsets):
                if index not in day.forgotten and index not in day.forgets:
                    yield f"{day.name}/{index}"

    def record_hash(self, record_id: str) -> bytes | None:
        """The first ``HASH_PREFIX`` bytes of a record's hash in the chain (None if it is not
        on disk, forgotten or a tombstone): a vector made of another record is told apart."""
        name, index = parse_id(record_id)
        day = self._days.get(name)
        if day is None or not day.live(index) or index in day.forgets:
            return None
        return day.hash_of(index)

    # -- forgetting ---------------------------------------------------------------------------

    def forget(self, record_id: str) -> None:
        """Destroy the record's ciphertext on disk (the day file rewritten atomically) and
        leave a signed tombstone; the chain still verifies."""
        self._forget([record_id])

    def forget_conversation(self, conversation: str) -> list[str]:
        """Forget every record of ``conversation``; their ids."""
        ids = [entry.id for entry in self.entries(conversation=conversation)]
        self._forget(ids)
        return ids

    def _forget(self, ids: Iterable[str]) -> None:
        self._check_open()
        self.flush()
        by_day: dict[str, list[int]] = {}
        for record_id in ids:
            name, index = parse_id(record_id)
            day = self._days.get(name)
            if day is None or not day.live(index):
                raise UnknownRecord(f"no record {record_id}")
            if index in day.forgets:
                raise StoreError(f"{record_id} is a tombstone; it stays while what it forgot "
                                 f"is gone")
            by_day.setdefault(name, []).append(index)
        for name, indices in by_day.items():
            self._rewrite_forgotten(self._days[name], set(indices))
        for name, indices in by_day.items():
            for index in sorted(indices):
                forgotten = f"{name}/{index}"
                self._append(TOMBSTONE, {"forgot": forgotten}, None, forgotten)
        self.flush()
        if by_day:
            event(_log, "forgotten", "alethia: records forgotten",
                  records=sum(len(indices) for indices in by_day.values()))

    def _rewrite_forgotten(self, day: _Day, indices: set[int]) -> None:
        path = self.root / DAYS / day.log
        data = path.read_bytes()
        out = []
        for line in dayfile.scan(data).lines:
            end = data.index(b"\n", line.offset) + 1
            raw = data[line.offset:end]
            if line.kind == "rec" and line.fields is not None and line.fields["i"] in indices:
                index, digest = int(line.fields["i"]), line.hexes("h")
                raw = dayfile.tombstone(index, digest, line.hexes("l"), sodium.sign(
                    self._secret, chain.tombstone_message(day.name, index, digest)))
            out.append(raw)
        files.replace(path, b"".join(out))
        day.forgotten |= indices
        day.index_lines(dayfile.scan(b"".join(out)))

    # -- keys ---------------------------------------------------------------------------------

    def rotate(self, version: int, key: bytearray) -> None:
        """Re-wrap every day's key under memory key ``version``: newer than every version
        held, or the newest with the same key (finishing a rotation); anything else is a
        ``StoreError``. Crash-safe: each day file's key is replaced atomically and names its
        version, so a half-done rotation opens with both keys and finishes on the next
        rotate."""
        self._check_open()
        newest = max(self.keys.memory)
        if version < newest or (version in self.keys.memory
                                and not sodium.equal(self.keys.memory[version], key)):
            raise StoreError(f"memory key version {version} is not a new version (the newest "
                             f"is {newest}); nothing was re-wrapped")
        self.flush()
        self.keys.memory[version] = key
        for day in self._days.values():
            if day.version != version:
                files.replace(self.root / DAYS / f"{day.name}.key",
                              keyfile.wrap(day.name, version, day.key, key))
                day.version = version
        event(_log, "rotated", "alethia: day keys re-wrapped", version=version,
              days=len(self._days))

    def status(self) -> Mapping[str, Any]:
        """The fields of ``runa.protocol.memory.STATUS_FIELDS`` the store knows."""
        self._check_open()
        size = sum(path.stat().st_size for path in (self.root / DAYS).iterdir()
                   if path.is_file())
        return {
            "records": sum(day.count - len(day.forgotten | set(day.forgets))
                           for day in self._days.values()),
            "days": len(self._days),
            "bytes": size + sum(len(line) for line in self._pending),
            "key_version": max(self.keys.memory),
            "public_key": self.public.hex(),
            "unsigned": sum(day.count - day.signed for day in self._days.values()),
            "durability": {"records": self.durability.records, "ms": self.durability.ms},
        }

    def close(self) -> None:
        """Flush, sign and release the lock."""
        if self._lock is None:
            return
        try:
            self.flush()
        finally:
            self._wipe()

    def _wipe(self) -> None:
        sodium.wipe(self._secret)
        for day in self._days.values():
            sodium.wipe(day.key)
        self._days.clear()
        self._pending.clear()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _check_open(self) -> None:
        if self._lock is None:
            raise StoreError(f"{self.root}: the store is closed")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _torn_start(name: str, scan: dayfile.Scan, data: bytes, public: bytes) -> int:
    """Where the newest day's torn tail starts: after its last signature line that verifies
    and whose head is the chain's (0: none). What follows may only be what a crash leaves
    of a batch: records that go on with the chain, lines with zeroed bytes (pages that
    never reached the disk), signature lines of ours, and half a line; anything else is a
    ``StoreError`` and nothing is cut."""
    header = scan.header
    if header is None or header.fields is None or header.fields.get("day") != name:
        if not scan.lines:
            return 0  # not even the header line was written whole
        raise StoreError(f"day {name}: the first line is not the day's header; nothing was "
                         f"cut (`runa memory verify` names the damage)")
    links = {0: header.hexes("prev")}
    end, signed, count = 0, 0, 0
    tail: list[dayfile.Line] = []
    for line in scan.lines[1:]:
        fields = line.fields
        if fields is not None and fields["t"] == "rec" and fields["i"] == count + 1 and \
                chain.link(links[count], name, count + 1, line.hexes("h")) == line.hexes("l"):
            count += 1
            links[count] = line.hexes("l")
            tail.append(line)
            continue
        if (fields is not None and fields["t"] == "sig" and links.get(fields["count"])
                == line.hexes("head") and fields["count"] == count
                and sodium.signed_by(public, chain.head_message(name, count, links[count]),
                                     line.hexes("sig"))):
            end = scan.lines[line.number].offset if line.number < len(scan.lines) else scan.end
            signed, tail = count, []
            continue
        tail.append(line)
    for line in tail:
        raw = data[line.offset:data.index(b"\n", line.offset)]
        fields = line.fields
        ours = (fields is not None and fields["t"] == "sig" and sodium.signed_by(
            public, chain.head_message(name, fields["count"], line.hexes("head")),
            line.hexes("sig")))
        follows = fields is not None and fields["t"] == "rec" and fields["i"] > signed
        if not (ours or follows or b"\0" in raw):
            raise StoreError(f"day {name}: line {line.number} after the last signed batch is "
                             f"not what a crash leaves; nothing was cut (`runa memory "
                             f"verify` names the damage)")
    return end
