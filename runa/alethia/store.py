"""The store: day files of encrypted records under a hash chain, signed by day (CONTRACT).

This module's names and signatures are the contract the daemon and the CLI are written
against. Layout under ``root`` (``Paths.data / "alethia"``; docs/alethia.md is the
reference):

- ``alethia.json``: the format and the Ed25519 public key (hex), so ``verify`` needs no
  secret; ``lock``: the writer's flock;
- ``days/YYYY-MM-DD.key``: the day's random data key, wrapped (XChaCha20-Poly1305) by the
  memory key of the version it names (``Keys.memory``), so rotating the memory key
  re-wraps these small files and re-encrypts nothing (the chain and the signatures stay);
- ``days/YYYY-MM-DD.log``: the day's lines (``runa.alethia.dayfile``): a header naming the
  previous day's head, each record encrypted on its own under the day key (a fresh nonce;
  its day and index authenticated), and a signature line after every durable batch;
- a hash chain over the records' ciphertext hashes (``runa.alethia.chain``): a forgotten
  record keeps its hash, so the chain still verifies.

Durability: ``append`` queues; the batch is written with one ``write``, signed and fsynced
once ``Durability.records`` records are pending or the oldest is ``Durability.ms`` old (at
the next ``append``, or when the owner's loop calls ``flush`` at ``due()``). An unclean stop
loses at most the pending batch: fewer than ``records`` records, none older than ``ms``
while the owner honours ``due()``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import json
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runa.alethia import chain, dayfile, files
from runa.alethia.errors import StoreError, StoreFull, UnknownRecord, WrongKey
from runa.alethia.model import Durability, Entry, Keys, Problem, Record, Report
from runa.alethia.verify import DayCheck, check_day
from runa.crypto import sodium
from runa.log import event

__all__ = ["MEMORY_KEY", "SIGNING_KEY", "Durability", "Entry", "Keys", "Problem", "Record",
           "Report", "Store", "StoreError", "StoreFull", "UnknownRecord", "WrongKey",
           "restore", "snapshot", "verify"]

#: coven's names: the memory key of version N (32 random bytes) and the signing seed.
MEMORY_KEY = "alethia.memory_key.v{version}"
SIGNING_KEY = "alethia.signing_key"

META = "alethia.json"
DAYS = "days"
TOMBSTONE = "tombstone"  # the kind of the record a forget appends to today's chain
SHIPPED_DURABILITY = Durability()
_log = logging.getLogger(__name__)


def day_of(moment: float) -> str:
    """The UTC day of a Unix time, as a day file names it."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def parse_id(record_id: str) -> tuple[str, int]:
    day, _, index = record_id.partition("/")
    try:
        datetime.strptime(day, "%Y-%m-%d")
        number = int(index)
    except ValueError:
        raise UnknownRecord(f"{record_id!r} is not a record id (YYYY-MM-DD/N)") from None
    if number < 1:
        raise UnknownRecord(f"{record_id!r} is not a record id (YYYY-MM-DD/N)")
    return day, number


# -- files ------------------------------------------------------------------------------------

def _read_public_key(root: Path) -> bytes | None:
    try:
        meta = json.loads((root / META).read_text())
        return bytes.fromhex(meta["public_key"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"{root / META}: not an alethia store's description") from None


def _day_names(root: Path) -> list[str]:
    return sorted(path.stem for path in (root / DAYS).glob("*.log"))


def _wrap(day: str, version: int, data_key: bytearray, memory_key: bytearray) -> bytes:
    nonce = sodium.random_bytes(sodium.NONCE_BYTES)
    wrapped = sodium.encrypt(memory_key, nonce, data_key, chain.day_key_associated(day, version))
    return json.dumps({"day": day, "version": version, "nonce": nonce.hex(),
                       "wrapped": wrapped.hex()}).encode() + b"\n"


def _unwrap(path: Path, keys: Keys) -> tuple[bytearray, int]:
    day = path.stem
    try:
        fields = json.loads(path.read_bytes())
        version, nonce = int(fields["version"]), bytes.fromhex(fields["nonce"])
        wrapped = bytes.fromhex(fields["wrapped"])
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"{path}: not a day key file") from None
    if version not in keys.memory:
        raise WrongKey(f"{path}: the day key is wrapped by memory key version {version}, "
                       f"which was not given (given: {sorted(keys.memory)})")
    key = sodium.decrypt_into(keys.memory[version], nonce, wrapped,
                              chain.day_key_associated(day, version))
    if key is None:
        raise WrongKey(f"{path}: memory key version {version} does not open this day's key")
    return key, version


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
    written: bool = False  # the log file (and its header) exists

    @property
    def log(self) -> str:
        return f"{self.name}.log"


class Store:
    """The open store: one writer (the daemon) at a time, under a lock file."""

    def __init__(self, root: Path, keys: Keys, public: bytes, secret: bytearray, lock: int,
                 clock: Callable[[], float], durability: Durability) -> None:
        self.root = root
        self.keys = keys
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
        stored = _read_public_key(root)
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
                opened[path.stem] = _unwrap(path, keys)
            missing = [day for day in _day_names(root) if day not in opened]
            if missing:
                raise StoreError(f"{root / DAYS}: day {missing[0]} has records but no key file")
            # Everything is checked: from here on the store may write.
            if stored is None:
                files.replace(root / META, json.dumps(
                    {"format": dayfile.FORMAT, "public_key": public.hex()}).encode() + b"\n")
            files.remove_temporaries(root / DAYS)
            for name, (key, version) in opened.items():
                store._load_day(name, key, version)
        except BaseException:
            for key, _version in opened.values():
                sodium.wipe(key)
            store._lock = None  # open() releases it
            store._wipe()
            raise
        return store

    def _load_day(self, name: str, key: bytearray, version: int) -> None:
        path = self.root / DAYS / f"{name}.log"
        if not path.exists():  # a key written, the day's first batch never: start it again
            (self.root / DAYS / f"{name}.key").unlink()
            sodium.wipe(key)
            return
        data = path.read_bytes()
        end = dayfile.scan(data).signed_end()
        if end < len(data):
            files.cut(path, end)
            event(_log, "torn_tail", f"alethia: cut {len(data) - end} bytes after day {name}'s "
                  f"last signed batch (a batch a crash interrupted)", level=logging.WARNING,
                  day=name, bytes=len(data) - end)
        scan = dayfile.scan(data[:end])
        header = scan.header
        if header is None:  # no batch of this day was written whole
            path.unlink()
            (self.root / DAYS / f"{name}.key").unlink()
            sodium.wipe(key)
            return
        day = _Day(name, key, version, header.hexes("prev"), header.hexes("prev"),
                   written=True)
        for line in scan.records():
            assert line.fields is not None
            index = int(line.fields["i"])
            day.offsets[index] = line.offset
            if "forgot" in line.fields:
                day.forgotten.add(index)
            if index > day.count:
                day.count, day.head = index, line.hexes("l")
        signatures = scan.signatures()
        if signatures and signatures[-1].fields is not None:
            day.signed = int(signatures[-1].fields["count"])
        self._days[name] = day
        self._durable = (day.count, day.head)

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
                          _wrap(name, version, key, self.keys.memory[version]))
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
        self._check_open()
        now = self._clock()
        day = self._day_for(now)
        index = day.count + 1
        plaintext = json.dumps({"time": now if at is None else at, "kind": kind,
                                "body": dict(body)}, separators=(",", ":")).encode()
        nonce = sodium.random_bytes(sodium.NONCE_BYTES)
        ciphertext = sodium.encrypt(day.key, nonce, plaintext,
                                    chain.record_associated(day.name, index))
        digest = chain.record_hash(nonce, ciphertext)
        link = chain.link(day.head, day.name, index, digest)
        self._pending.append(dayfile.record(index, digest, link, nonce, ciphertext))
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
            assert self._durable is not None
            day.count, day.head = self._durable
            event(_log, "append_failed", f"alethia: {lost} records not written",
                  level=logging.ERROR, records=lost, full=isinstance(error, StoreFull))
            raise
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
            return dict(json.loads(bytes(plaintext)))
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
                     body.get("conversation"), body.get("persona"))

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
        if day is None or index not in day.offsets or index in day.forgotten:
            raise UnknownRecord(f"no record {record_id}")
        line = self._line_at(day, index)
        if line is None or line.fields is None or "forgot" in line.fields:
            raise UnknownRecord(f"no record {record_id}")
        fields = self._decrypt(day, index, line)
        return Record(self._entry(record_id, fields), fields.get("body") or {})

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
            if day is None or index not in day.offsets or index in day.forgotten:
                raise UnknownRecord(f"no record {record_id}")
            by_day.setdefault(name, []).append(index)
        for name, indices in by_day.items():
            self._rewrite_forgotten(self._days[name], set(indices))
        for name, indices in by_day.items():
            for index in sorted(indices):
                self.append(TOMBSTONE, {"forgot": f"{name}/{index}"})
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
        for line in dayfile.scan(b"".join(out)).records():
            assert line.fields is not None
            day.offsets[int(line.fields["i"])] = line.offset

    # -- keys ---------------------------------------------------------------------------------

    def rotate(self, version: int, key: bytearray) -> None:
        """Re-wrap every day's key under memory key ``version`` (crash-safe: each day file's
        key is replaced atomically and names its version, so a half-done rotation opens
        with both keys and finishes on the next rotate)."""
        self._check_open()
        self.flush()
        self.keys.memory[version] = key
        for day in self._days.values():
            if day.version != version:
                files.replace(self.root / DAYS / f"{day.name}.key",
                              _wrap(day.name, version, day.key, key))
                day.version = version
        event(_log, "rotated", "alethia: day keys re-wrapped", version=version,
              days=len(self._days))

    def status(self) -> Mapping[str, Any]:
        """The fields of ``runa.protocol.memory.STATUS_FIELDS`` the store knows."""
        self._check_open()
        size = sum(path.stat().st_size for path in (self.root / DAYS).iterdir()
                   if path.is_file())
        return {
            "records": sum(day.count for day in self._days.values()),
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


# -- checking, copying ------------------------------------------------------------------------

def _check_days(read: Callable[[str], bytes], names: list[str], public: bytes) -> Report:
    problems: list[Problem] = []
    records = forgotten = unsigned = 0
    head = chain.GENESIS
    for position, name in enumerate(names):
        check: DayCheck = check_day(name, dayfile.scan(read(name)), public)
        if check.prev is not None and check.prev != head:
            problems.append(Problem(name, None, "missing", "the head this day names is not "
                                    "the previous day's: a day, or a day's end, is missing"))
        if check.unsigned and position < len(names) - 1:  # a past day ends signed
            check.note(None, "signature", f"the day's last {check.unsigned} records are not "
                                          f"signed")
        problems.extend(check.problems)
        records += check.records
        forgotten += check.forgotten
        unsigned += check.unsigned
        head = check.head if check.head is not None else head
    return Report(len(names), records, forgotten, unsigned, public.hex(), tuple(problems))


def verify(root: Path) -> Report:
    """Walk every day's chain and signatures with the store's public key; no secret key, no
    daemon needed. Names the first altered, removed, reordered or inserted record of each day
    and each day whose signature fails; untouched days verify on their own."""
    public = _read_public_key(root)
    if public is None:
        raise StoreError(f"{root}: no alethia store here ({META} is missing)")
    return _check_days(lambda name: (root / DAYS / f"{name}.log").read_bytes(),
                       _day_names(root), public)


def _complete_lines(path: Path) -> bytes:
    """The file's whole lines as of now: a batch being written is left out."""
    with path.open("rb") as handle:
        data = handle.read(os.fstat(handle.fileno()).st_size)
    return data[:data.rfind(b"\n") + 1]


def snapshot(root: Path, target: Path) -> None:
    """Copy the store (as encrypted as it is) to the new file ``target``, consistently.

    A tar of ``alethia.json`` and the day files, readable while the daemon writes: key files
    are replaced whole, and each log is taken up to its last complete line (day files only
    grow between atomic replaces), so the copy is the store as it was at one moment per day.
    """
    if _read_public_key(root) is None:
        raise StoreError(f"{root}: no alethia store here ({META} is missing)")
    if target.exists():
        raise StoreError(f"{target}: exists; a snapshot goes to a new file")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        members = [(META, (root / META).read_bytes())]
        for path in sorted((root / DAYS).glob("*.key")):
            members.append((f"{DAYS}/{path.name}", path.read_bytes()))
        for path in sorted((root / DAYS).glob("*.log")):
            members.append((f"{DAYS}/{path.name}", _complete_lines(path)))
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    target.parent.mkdir(parents=True, exist_ok=True)
    files.replace(target, buffer.getvalue())


def _extract(source: Path, into: Path) -> None:
    try:
        with tarfile.open(source, mode="r:") as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                allowed = (member.name == META or (
                    len(parts) == 2 and parts[0] == DAYS and not parts[1].startswith(".")
                    and parts[1].endswith((".key", ".log"))))
                handle = tar.extractfile(member) if member.isfile() else None
                if not allowed or handle is None:
                    raise StoreError(f"{source}: {member.name!r} is not part of a snapshot")
                path = into / member.name
                path.parent.mkdir(mode=0o700, exist_ok=True)
                path.write_bytes(handle.read())
                path.chmod(0o600)
    except (tarfile.TarError, OSError) as error:
        raise StoreError(f"{source}: not a readable snapshot ({error})") from None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(a))


def restore(source: Path, root: Path) -> Report:
    """Check that ``source`` is a snapshot that verifies, then replace the store with it
    atomically; the report of the restored store.

    The store must not be open (its lock is taken, ``StoreError`` if held): the daemon
    closes it first and opens the restored one after.
    """
    staging = root.with_name(f".{root.name}.restore.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / DAYS).mkdir(parents=True, mode=0o700)
    lock: int | None = None
    try:
        _extract(source, staging)
        report = verify(staging)
        if not report.ok:
            raise StoreError(f"{source}: the snapshot does not verify ({len(report.problems)} "
                             f"problems; the first: day {report.problems[0].day}, "
                             f"{report.problems[0].kind})")
        if root.exists():
            lock = files.lock(root)
            if not _exchange(staging, root):
                old = root.with_name(f".{root.name}.old.{os.getpid()}")
                os.rename(root, old)
                os.rename(staging, root)
                staging = old
        else:
            os.rename(staging, root)
        files.fsync_directory(root.parent)
        return report
    finally:
        if lock is not None:
            os.close(lock)
        shutil.rmtree(staging, ignore_errors=True)
