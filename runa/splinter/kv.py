"""The key-value store: fixed hashed slots, lock-free readers, out-of-place writes.

Slots (layout.py): a seqlock ``epoch`` whose bit 0 selects which of two value buffers is current,
and a ``keygen`` word (generation << 2 | state) that changes whenever a slot changes key.

- A writer (holding the slot's kernel-released lock) writes the new value into the *other* buffer
  and publishes it with one store: ``epoch += 1``. A writer killed before that store leaves the
  old value current and intact; the next writer simply overwrites the unpublished buffer.
- A reader loads ``epoch``, checks ``keygen``, copies the current buffer, and accepts the copy only
  if ``epoch`` is unchanged (a writer can only touch the buffer being read after publishing, so
  any overlap moves the epoch). Readers take no lock and never see a torn value.
- Insert and unset take the store lock (structure changes); updates take only the slot lock.
  Probing is linear from crc32(key) % slots; unset leaves a tombstone (or an empty slot when the
  chain ends there), and insert searches the whole chain before reusing a tombstone, so a key is
  never duplicated.

Memory ordering relies on x86-64 TSO (stores seen in order, loads not reordered with loads) and on
CPython performing each 8-byte word access as one aligned load/store (memoryview 'Q').
"""

from __future__ import annotations

import builtins
import ctypes
import time
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import compress

from runa.splinter.errors import InvalidKey, InvalidTtl, StoreFull, ValueTooLarge
from runa.splinter.layout import (
    CTR_EVICTIONS,
    CTR_EXPIRED,
    CTR_IDLE_EXPIRED,
    CTR_INSERTS,
    CTR_LIVE,
    CTR_STORE_FULL,
    CTR_TOMBS,
    CTR_UNSETS,
    FLAG_EPHEMERAL,
    HDR_COUNTERS,
    LOCK_SLOT_BASE,
    LOCK_STORE,
    S_ATIME,
    S_EPOCH,
    S_EXPIRY,
    S_FLAGS,
    S_HASH,
    S_KEYGEN,
    S_KEYLEN,
    S_LEN0,
    S_LEN1,
    S_MTIME,
    S_PROMOTED_AT,
    S_PROMOTED_READS,
    S_READS,
    SLOT_HEADER,
    STATE_EMPTY,
    STATE_LIVE,
    STATE_TOMB,
    STORE_COUNTERS,
)
from runa.splinter.locks import WriterLocks
from runa.splinter.segment import Segment

# The longest TTL of a key: 100 years, so now + TTL always fits the slot's u64 expiry word.
# (Not a request's ttl_ms, which envelope.MAX_REQUEST_TTL_MS bounds to a day.)
MAX_KEY_TTL_MS = 100 * 365 * 24 * 3600 * 1000
ATIME_GRANULARITY_NS = 1_000_000  # readers refresh last-access at most once a millisecond
_CACHE_FACTOR = 4  # the per-process key->slot cache holds at most slots * this entries

WriteHook = Callable[[], None]
_STATE_OF_LOW_BYTE = bytes(b & 3 for b in range(256))  # keygen's low byte -> slot state

# A cache entry: (word index of the slot header, keygen seen, buffer 0 offset, buffer 1 offset,
# pointer to the slot's mutex). Valid only while the slot's keygen still equals the one recorded.
_Entry = tuple[int, int, int, int, ctypes.c_void_p]
# Called with the slot lock held and the slot's header word index: False spares the slot.
Veto = Callable[[int], bool]


@dataclass(frozen=True)
class SlotInfo:
    """A consistent snapshot of one live slot's metadata (for list/export and the keeper)."""

    key: str
    index: int
    keygen: int
    length: int
    epoch: int
    atime_ns: int
    mtime_ns: int
    expiry_ns: int  # CLOCK_MONOTONIC deadline; 0 = none
    ephemeral: bool
    reads: int
    promoted_reads: int = 0  # ``reads`` at the key's last promote event
    promoted_at_ns: int = 0  # CLOCK_MONOTONIC of that event; 0 = never promoted

    def expired(self, now_ns: int) -> bool:
        return self.expiry_ns != 0 and now_ns >= self.expiry_ns


@dataclass(frozen=True)
class StoreRepair:
    """What ``KV.repair`` found wrong and put right."""

    counters: dict[str, tuple[int, int]]  # counter name: (value found, value written)
    scrubbed: int  # slots holding no key that still held a dead writer's key or value bytes

    def __bool__(self) -> bool:
        return bool(self.counters or self.scrubbed)


class KV:
    """Get/set/unset/list over the slot table of one open segment.

    ``skip_recheck`` and ``write_hook`` are test seams: the first disables the reader's epoch
    re-check (the positive control of the torn-read test), the second is called by a writer after
    half of a value has been written (so a test can SIGKILL it there).
    """

    def __init__(
        self,
        segment: Segment,
        locks: WriterLocks,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        skip_recheck: bool = False,
        write_hook: WriteHook | None = None,
    ) -> None:
        lay = segment.layout
        g = segment.geometry
        self._seg = segment
        self._w = segment.words
        self._mm = segment.mm
        self._locks = locks
        self._trylock = locks.trylock
        self._unlock = locks.unlock
        self._clock = clock
        self._hook = write_hook
        self._slots = g.slots
        self._max_key = g.max_key
        self._max_value = g.max_value
        self._value_size = lay.value_size
        self._key_size = lay.key_size
        self._slots_off = lay.slots_off
        self._stride = lay.slot_stride
        self._ctr = HDR_COUNTERS // 8
        self._zeros = bytes(max(lay.value_size, lay.key_size))
        self._cache: dict[object, _Entry] = {}
        self._cache_max = g.slots * _CACHE_FACTOR
        if skip_recheck:
            self.get = self._get_unchecked  # type: ignore[method-assign]

    # -- keys -------------------------------------------------------------------------------

    def _key(self, key: object) -> tuple[str, bytes]:
        """Validate a key; returns (text, UTF-8 bytes). Never truncates."""
        if isinstance(key, str):
            try:
                kb = key.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidKey(key, f"not encodable as UTF-8 ({e.reason})") from None
            text = key
        elif isinstance(key, (bytes, bytearray, memoryview)):
            kb = bytes(key)
            try:
                text = kb.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidKey(kb, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
        else:
            raise InvalidKey(key, f"keys are str (or UTF-8 bytes), not {type(key).__name__}")
        if not kb:
            raise InvalidKey(key, "empty")
        if len(kb) > self._max_key:
            raise InvalidKey(
                key,
                f"{len(kb)} bytes long; this bus allows at most {self._max_key} (not truncated)",
            )
        return text, kb

    def _entry(self, idx: int, kg: int) -> _Entry:
        base = self._slots_off + idx * self._stride
        b0 = base + SLOT_HEADER + self._key_size
        ptr = self._locks.pointer(LOCK_SLOT_BASE + idx)
        return (base >> 3, kg, b0, b0 + self._value_size, ptr)

    def _index(self, ent: _Entry) -> int:
        return ((ent[0] << 3) - self._slots_off) // self._stride

    def _remember(self, text: str, ent: _Entry) -> None:
        if len(self._cache) >= self._cache_max:
            self._cache.clear()
        self._cache[text] = ent

    def _find(self, kb: bytes, h: int) -> tuple[int, int] | None:
        """Lock-free probe: (slot index, keygen) of the live slot holding ``kb``, or None."""
        W, mm, S = self._w, self._mm, self._slots
        kl = len(kb)
        start = h % S
        while True:
            restart = False
            for i in range(S):
                idx = start + i
                if idx >= S:
                    idx -= S
                base = self._slots_off + idx * self._stride
                w = base >> 3
                kg = W[w + S_KEYGEN]
                st = kg & 3
                if st == STATE_EMPTY:
                    return None
                if st == STATE_LIVE and W[w + S_HASH] == h and W[w + S_KEYLEN] == kl:
                    same = mm[base + SLOT_HEADER : base + SLOT_HEADER + kl] == kb
                    if W[w + S_KEYGEN] != kg:
                        restart = True  # the slot changed key while we compared
                        break
                    if same:
                        return idx, kg
            if not restart:
                return None

    def _lookup(self, key: object) -> _Entry | None:
        text, kb = self._key(key)
        found = self._find(kb, zlib.crc32(kb))
        if found is None:
            self._cache.pop(text, None)
            return None
        ent = self._entry(*found)
        self._remember(text, ent)
        return ent

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The current value of ``key``, or None if it is absent or expired."""
        try:
            ent = self._cache.get(key)
        except TypeError:
            ent = None
        W, mm = self._w, self._mm
        while True:
            if ent is None:
                ent = self._lookup(key)
                if ent is None:
                    return None
            w, kg, b0, b1, _ = ent
            e1 = W[w]
            if W[w + 1] != kg:
                ent = None
                continue
            if e1 & 1:
                n = W[w + 5]
                data = mm[b1 : b1 + n]
            else:
                n = W[w + 4]
                data = mm[b0 : b0 + n]
            if W[w] == e1:
                break
        exp = W[w + 6]
        now = self._clock()
        if exp and now >= exp:
            return None
        if now - W[w + 8] > ATIME_GRANULARITY_NS:
            W[w + 8] = now
        W[w + 10] += 1
        return data

    def _get_unchecked(self, key: str) -> bytes | None:
        """get() without the epoch re-check: the positive control of the torn-read test only."""
        ent = self._cache.get(key)
        W, mm = self._w, self._mm
        if ent is None or W[ent[0] + 1] != ent[1]:
            ent = self._lookup(key)
            if ent is None:
                return None
        w, _kg, b0, b1, _ = ent
        e1 = W[w]
        if e1 & 1:
            return mm[b1 : b1 + W[w + 5]]
        return mm[b0 : b0 + W[w + 4]]

    def info(self, key: str) -> SlotInfo | None:
        """Metadata of ``key`` (expired keys included, see ``SlotInfo.expired``), or None."""
        ent = self._lookup(key)
        if ent is None:
            return None
        return self._snapshot(self._index(ent))

    def _snapshot(self, idx: int) -> SlotInfo | None:
        W, mm = self._w, self._mm
        base = self._slots_off + idx * self._stride
        w = base >> 3
        while True:
            e1 = W[w]
            kg = W[w + S_KEYGEN]
            if kg & 3 != STATE_LIVE:
                return None
            kl = min(W[w + S_KEYLEN], self._max_key)
            raw = mm[base + SLOT_HEADER : base + SLOT_HEADER + kl]
            vals = [W[w + i] for i in range(S_PROMOTED_AT + 1)]
            if W[w] == e1 and W[w + S_KEYGEN] == kg:
                break
        return SlotInfo(
            key=raw.decode("utf-8", "replace"), index=idx, keygen=kg,
            length=vals[S_LEN1] if e1 & 1 else vals[S_LEN0], epoch=e1,
            atime_ns=vals[S_ATIME], mtime_ns=vals[S_MTIME], expiry_ns=vals[S_EXPIRY],
            ephemeral=bool(vals[S_FLAGS] & FLAG_EPHEMERAL), reads=vals[S_READS],
            promoted_reads=vals[S_PROMOTED_READS], promoted_at_ns=vals[S_PROMOTED_AT],
        )

    def snapshot(self, index: int) -> SlotInfo | None:
        """Metadata of the key in slot ``index`` (None unless the slot is live)."""
        if not 0 <= index < self._slots:
            raise IndexError(f"slot {index} out of range 0..{self._slots - 1}")
        return self._snapshot(index)

    def column(self, word: int) -> list[int]:
        """Header word ``word`` (layout ``S_*``) of every slot, in slot order.

        One strided copy done in C: ~1 ms for 50,000 slots against ~15 ms for a Python loop,
        which is what lets the keeper scan the whole table every sweep (docs/protocol.md,
        Decay). Words of non-live slots are zero except the epoch and keygen; a crashed insert
        may leave others set, so callers check the keygen of what they pick.
        """
        start = (self._slots_off >> 3) + word
        step = self._stride >> 3
        return self._w[start : start + self._slots * step : step].tolist()

    def live_at(self, index: int) -> int:
        """The keygen of slot ``index`` if it holds a live key, else 0."""
        kg = self._w[((self._slots_off + index * self._stride) >> 3) + S_KEYGEN]
        return kg if kg & 3 == STATE_LIVE else 0

    def scan(self) -> list[SlotInfo]:
        """Every live slot (expired ones included), in slot order; lock-free and O(slots)."""
        W, S = self._w, self._slots
        out = []
        for idx in range(S):
            w = (self._slots_off + idx * self._stride) >> 3
            if W[w + S_KEYGEN] & 3 == STATE_LIVE:
                snap = self._snapshot(idx)
                if snap is not None:
                    out.append(snap)
        return out

    def list(self, prefix: str = "") -> list[str]:
        """Keys that are live and not expired, optionally only those starting with ``prefix``."""
        now = self._clock()
        return [
            s.key for s in self.scan() if not s.expired(now) and s.key.startswith(prefix)
        ]

    def expired(self, now_ns: int | None = None) -> builtins.list[SlotInfo]:
        """Live slots whose TTL has passed (the keeper's decay pass; pair with ``expire``)."""
        now = self._clock() if now_ns is None else now_ns
        out = []
        for idx in self._due(now):
            snap = self._snapshot(idx)
            if snap is not None and snap.expired(now):
                out.append(snap)
        return out

    def _due(self, now: int) -> builtins.list[int]:
        """Indices whose expiry word is set and has passed (live or not: callers check)."""
        col = self.column(S_EXPIRY)
        return [i for i in compress(range(self._slots), col) if col[i] <= now]

    def counts(self) -> dict[str, int]:
        """Store counters kept in the header (layout.STORE_COUNTERS) and the slot count."""
        W, c = self._w, self._ctr
        out = {"slots": self._slots}
        out.update((name, W[c + i]) for i, name in enumerate(STORE_COUNTERS))
        return out

    def repair(self) -> StoreRepair:
        """Under the store lock, put right what a writer killed mid-insert or mid-unset left.

        The next writer that takes over a dead holder's store lock does this already; the
        keeper also calls it every sweep, so a segment that went wrong another way (an older
        version, a stray write) is repaired within one sweep.
        """
        with self._locks.hold(LOCK_STORE):
            return self._repair_locked()

    def _repair_locked(self) -> StoreRepair:
        """Store lock held: scrub leftovers of dead writers, recount ``live``/``tombstones``.

        Every change of a slot's state, and of these counters, happens under the store lock,
        but not in the same store: a writer killed between the two leaves a counter off by one,
        and one killed mid-insert or mid-unset leaves key and value bytes in a slot holding no
        key. With the store lock held no such change is in flight, so a slot that holds no key
        but has a key length is a leftover (inserts set it first, unsets clear it last), and the
        recount is exact.
        """
        # Byte columns (one strided copy each, all in C): a slot's state is the low two bits of
        # its keygen; a key length (at most 1024, Geometry.check) lives in the low two bytes.
        states = self._bytes_column(S_KEYGEN * 8).translate(_STATE_OF_LOW_BYTE)
        live, tombs = states.count(STATE_LIVE), states.count(STATE_TOMB)
        length = int.from_bytes(self._bytes_column(S_KEYLEN * 8), "little")
        length |= int.from_bytes(self._bytes_column(S_KEYLEN * 8 + 1), "little")
        has_length = length.to_bytes(self._slots, "little")
        scrubbed = 0
        if self._slots - has_length.count(0) > live:  # some slot holding no key has a length
            for idx in compress(range(self._slots), has_length):
                if states[idx] != STATE_LIVE:
                    with self._locks.hold(LOCK_SLOT_BASE + idx):
                        self._scrub(idx)
                    scrubbed += 1
        W, c = self._w, self._ctr
        fixed = {}
        for name, index, real in (("live", CTR_LIVE, live), ("tombstones", CTR_TOMBS, tombs)):
            if W[c + index] != real:
                fixed[name] = (W[c + index], real)
                W[c + index] = real
        return StoreRepair(counters=fixed, scrubbed=scrubbed)

    def _bytes_column(self, offset: int) -> bytes:
        """Byte ``offset`` of every slot's header, in slot order (one strided copy in C)."""
        first = self._slots_off + offset
        return self._mm[first : first + self._slots * self._stride : self._stride]

    def _store_locked(self) -> AbstractContextManager[bool]:
        """Hold the store lock; when it is taken over from a dead writer, repair first."""
        return self._locks.hold(LOCK_STORE, self._repair_locked)

    # -- writes -----------------------------------------------------------------------------

    def set(
        self, key: str, value: bytes | str, *, ttl_ms: int | None = None, ephemeral: bool = False
    ) -> None:
        """Store ``value`` under ``key`` (replacing any TTL/flags it had).

        ``ttl_ms``: the key expires that long after this write; ``ephemeral``: the key may be
        evicted under memory pressure (issue 4's keeper). Raises InvalidKey, ValueTooLarge,
        StoreFull.
        """
        if type(value) is not bytes:
            value = _as_bytes(value)
        n = len(value)
        if n > self._max_value:
            raise ValueTooLarge(str(key), n, self._max_value)
        now = self._clock()
        if ttl_ms is None:
            expiry = 0
        elif type(ttl_ms) is int and 0 < ttl_ms <= MAX_KEY_TTL_MS:
            expiry = now + ttl_ms * 1_000_000
        else:
            raise InvalidTtl(ttl_ms, MAX_KEY_TTL_MS)
        flags = FLAG_EPHEMERAL if ephemeral else 0
        try:
            ent = self._cache.get(key)
        except TypeError:
            ent = None
        if ent is not None:
            # Fast path (the key's slot is known): inline, since every call here costs ~0.1 µs.
            w, kg, b0, b1, lk = ent
            W = self._w
            rc = self._trylock(lk)
            if rc:
                self._locks.settle(lk, rc)
            try:
                if W[w + 1] == kg:
                    e = W[w]
                    if e & 1:
                        off = b0
                        W[w + 4] = n
                    else:
                        off = b1
                        W[w + 5] = n
                    if self._hook is None:
                        self._mm[off : off + n] = value
                    else:
                        self._put(off, value, n)
                    W[w + 6] = expiry
                    W[w + 7] = flags
                    W[w + 8] = now
                    W[w + 9] = now
                    W[w] = e + 1  # publish: one store flips the current buffer
                    return
            finally:
                self._unlock(lk)
        self._set_slow(key, value, n, expiry, flags, now)

    def _update(
        self, ent: _Entry, value: bytes, n: int, expiry: int, flags: int, now: int
    ) -> bool:
        """Rewrite a slot already holding the key; False if it no longer does."""
        w, kg, b0, b1, lk = ent
        W = self._w
        rc = self._trylock(lk)
        if rc:
            self._locks.settle(lk, rc)
        try:
            if W[w + 1] != kg:
                return False
            e = W[w]
            if e & 1:
                self._put(b0, value, n)
                W[w + 4] = n
            else:
                self._put(b1, value, n)
                W[w + 5] = n
            W[w + 6] = expiry
            W[w + 7] = flags
            W[w + 8] = now
            W[w + 9] = now
            W[w] = e + 1  # publish: one store flips the current buffer
        finally:
            self._unlock(lk)
        return True

    def _put(self, off: int, value: bytes, n: int) -> None:
        hook = self._hook
        if hook is None:
            self._mm[off : off + n] = value
        else:
            half = n // 2
            self._mm[off : off + half] = value[:half]
            hook()
            self._mm[off + half : off + n] = value[half:]

    def _set_slow(
        self, key: object, value: bytes, n: int, expiry: int, flags: int, now: int
    ) -> None:
        text, kb = self._key(key)
        h = zlib.crc32(kb)
        found = self._find(kb, h)
        if found is not None:
            ent = self._entry(*found)
            self._remember(text, ent)
            if self._update(ent, value, n, expiry, flags, now):
                return
        with self._store_locked():
            idx, kg, free = self._probe_locked(kb, h)
            if idx is not None:  # inserted meanwhile by someone else: it is an update
                ent = self._entry(idx, kg)
                self._remember(text, ent)
                if not self._update(ent, value, n, expiry, flags, now):  # pragma: no cover
                    raise AssertionError("slot changed key under the store lock")
                return
            if free is None:
                free = self._make_room_locked(now)
            if free is None:
                self._w[self._ctr + CTR_STORE_FULL] += 1
                raise StoreFull(text, self._slots)
            kg = self._insert(free, kb, h, value, n, expiry, flags, now)
            self._remember(text, self._entry(free, kg))

    def _probe_locked(self, kb: bytes, h: int) -> tuple[int | None, int, int | None]:
        """Under the store lock: (index, keygen) of the key if live, and the first reusable slot."""
        W, mm, S = self._w, self._mm, self._slots
        kl = len(kb)
        start = h % S
        free = None
        for i in range(S):
            idx = (start + i) % S
            base = self._slots_off + idx * self._stride
            w = base >> 3
            kg = W[w + S_KEYGEN]
            st = kg & 3
            if st == STATE_EMPTY:
                return None, 0, idx if free is None else free
            if st == STATE_TOMB:
                if free is None:
                    free = idx
                continue
            if (
                W[w + S_HASH] == h
                and W[w + S_KEYLEN] == kl
                and mm[base + SLOT_HEADER : base + SLOT_HEADER + kl] == kb
            ):
                return idx, kg, None
        return None, 0, free

    def _insert(
        self, idx: int, kb: bytes, h: int, value: bytes, n: int, expiry: int, flags: int, now: int
    ) -> int:
        """Fill an EMPTY or TOMB slot (store lock held), publish it by its keygen store.

        Returns the new keygen.
        """
        W, mm = self._w, self._mm
        w, _, b0, b1, _ = self._entry(idx, 0)
        base = w << 3
        kg = W[w + S_KEYGEN]
        W[w + S_KEYLEN] = len(kb)  # first: a slot holding no key but a length is a leftover
        W[w + S_HASH] = h
        mm[base + SLOT_HEADER : base + SLOT_HEADER + len(kb)] = kb
        e = W[w]
        if e & 1:
            self._put(b0, value, n)
            W[w + S_LEN0] = n
        else:
            self._put(b1, value, n)
            W[w + S_LEN1] = n
        W[w + S_EXPIRY] = expiry
        W[w + S_FLAGS] = flags
        W[w + S_ATIME] = now
        W[w + S_MTIME] = now
        W[w + S_READS] = 0
        W[w + S_PROMOTED_READS] = 0
        W[w + S_PROMOTED_AT] = 0
        W[w + S_EPOCH] = e + 1
        new_kg = (((kg >> 2) + 1) << 2) | STATE_LIVE
        W[w + S_KEYGEN] = new_kg  # publish the key
        c = self._ctr
        W[c + CTR_LIVE] += 1
        W[c + CTR_INSERTS] += 1
        if kg & 3 == STATE_TOMB:
            W[c + CTR_TOMBS] -= 1
        return new_kg

    def unset(self, key: str) -> bool:
        """Remove ``key``; True if it was there. The old value's bytes are scrubbed."""
        text, kb = self._key(key)
        self._cache.pop(text, None)
        h = zlib.crc32(kb)
        with self._store_locked():
            idx, kg, _ = self._probe_locked(kb, h)
            if idx is None:
                return False
            self._retire(idx, kg, CTR_UNSETS)
        return True

    def evict(self, index: int, keygen: int) -> bool:
        """Remove the key in slot ``index`` if it still has ``keygen`` (from scan), whatever it is.

        A key re-set since the scan has a new keygen only if it was re-inserted, so an update in
        place keeps it evictable; a reinserted one is spared. Counted in ``evictions``. (The
        keeper's decay uses ``expire`` / ``expire_idle``, which re-check why under the lock.)
        """
        return self._remove(index, keygen, CTR_EVICTIONS, None)

    def expire(self, index: int, keygen: int, now_ns: int | None = None) -> bool:
        """Remove the key in slot ``index`` if it still has ``keygen`` and its TTL has passed.

        The TTL is checked again under the slot's lock, so a key whose TTL was renewed by an
        update since the scan is spared. Counted in ``expired``.
        """
        now = self._clock() if now_ns is None else now_ns
        return self._remove(index, keygen, CTR_EXPIRED, self._expired_veto(now))

    def expire_idle(
        self, index: int, keygen: int, idle_ns: int, now_ns: int | None = None
    ) -> bool:
        """Remove an ephemeral key untouched for ``idle_ns`` (re-checked under its lock).

        Counted in ``idle_expired``. The keeper's access-based decay (``splinter.idle_expiry_s``).
        """
        now = self._clock() if now_ns is None else now_ns
        W = self._w

        def veto(w: int) -> bool:
            return bool(W[w + S_FLAGS] & FLAG_EPHEMERAL) and now - W[w + S_ATIME] >= idle_ns

        return self._remove(index, keygen, CTR_IDLE_EXPIRED, veto)

    def mark_promoted(self, index: int, keygen: int, reads: int, now_ns: int) -> bool:
        """Record that a promote event went out for the key in slot ``index`` at ``reads``.

        Under the slot lock and only if the slot still holds the same key (False otherwise), so
        a promote record never lands on a key inserted since the keeper's scan.
        """
        if not 0 <= index < self._slots:
            raise IndexError(f"slot {index} out of range 0..{self._slots - 1}")
        W = self._w
        w = (self._slots_off + index * self._stride) >> 3
        with self._locks.hold(LOCK_SLOT_BASE + index):
            if W[w + S_KEYGEN] != keygen or keygen & 3 != STATE_LIVE:
                return False
            W[w + S_PROMOTED_READS] = reads
            W[w + S_PROMOTED_AT] = now_ns
        return True

    def _expired_veto(self, now: int) -> Veto:
        W = self._w

        def veto(w: int) -> bool:
            exp = W[w + S_EXPIRY]
            return exp != 0 and exp <= now

        return veto

    def _remove(self, index: int, keygen: int, counter: int, veto: Veto | None) -> bool:
        if not 0 <= index < self._slots:
            raise IndexError(f"slot {index} out of range 0..{self._slots - 1}")
        with self._store_locked():
            w = (self._slots_off + index * self._stride) >> 3
            if self._w[w + S_KEYGEN] != keygen or keygen & 3 != STATE_LIVE:
                return False
            return self._retire(index, keygen, counter, veto)

    def _make_room_locked(self, now: int) -> int | None:
        """Store lock held and no free slot: the full-store eviction order (docs/protocol.md).

        First every key whose TTL has passed goes (counted in ``expired``); if there was none,
        the least recently used ephemeral key (counted in ``evictions``); if there is none
        either, None and the caller answers StoreFull. Returns a freed slot. With no empty slot
        left every probe chain spans the whole table, so any freed slot is a valid home for
        the new key.
        """
        W = self._w
        veto = self._expired_veto(now)
        freed = None
        for idx in self._due(now):
            kg = self.live_at(idx)
            if kg and self._retire(idx, kg, CTR_EXPIRED, veto) and freed is None:
                freed = idx
        if freed is not None:
            return freed

        def still_ephemeral(w: int) -> bool:
            return bool(W[w + S_FLAGS] & FLAG_EPHEMERAL)

        for _ in range(self._slots):
            victim = self._least_recent_ephemeral()
            if victim is None:
                return None
            if self._retire(victim, self.live_at(victim), CTR_EVICTIONS, still_ephemeral):
                return victim
        return None  # pragma: no cover - every round removes one candidate or a flag

    def _least_recent_ephemeral(self) -> int | None:
        """The live ephemeral slot with the oldest ``atime`` (ties: lowest index), or None."""
        flags = self.column(S_FLAGS)
        cands = [i for i in compress(range(self._slots), flags)
                 if flags[i] & FLAG_EPHEMERAL and self.live_at(i)]
        if not cands:
            return None
        atime = self.column(S_ATIME)
        return min(cands, key=atime.__getitem__)

    def _retire(self, idx: int, kg: int, counter: int, veto: Veto | None = None) -> bool:
        """Store lock held: tombstone a live slot under its slot lock, scrub it, shorten chains.

        ``veto`` (slot lock held) may spare the slot: then nothing changes and False is returned.
        """
        W = self._w
        w = (self._slots_off + idx * self._stride) >> 3
        with self._locks.hold(LOCK_SLOT_BASE + idx):
            if veto is not None and not veto(w):
                return False
            W[w + S_KEYGEN] = (((kg >> 2) + 1) << 2) | STATE_TOMB
            W[w] += 2  # readers mid-copy retry; the current-buffer bit is unchanged
            self._scrub(idx)
        c = self._ctr
        W[c + CTR_LIVE] -= 1
        W[c + counter] += 1
        W[c + CTR_TOMBS] += 1
        # A tombstone followed by an empty slot ends every chain through it: make it (and the
        # tombstones just before it) empty again, so misses stay short.
        S = self._slots

        def word(i: int) -> int:
            return (self._slots_off + (i % S) * self._stride) >> 3

        if W[word(idx + 1) + S_KEYGEN] & 3 != STATE_EMPTY:
            return True
        i = idx
        for _ in range(S):
            wi = word(i)
            kgi = W[wi + S_KEYGEN]
            if kgi & 3 != STATE_TOMB:
                break
            W[wi + S_KEYGEN] = (kgi & ~3) | STATE_EMPTY
            W[c + CTR_TOMBS] -= 1
            i -= 1
        return True


    def _scrub(self, idx: int) -> None:
        """Zero the key, both value buffers and the key's words (slot lock held, slot not live).

        The key length goes last: until then a repair recognises the slot as a leftover.
        """
        W, mm, zeros = self._w, self._mm, self._zeros
        w, _, b0, b1, _ = self._entry(idx, 0)
        base = w << 3
        mm[b0 : b0 + self._value_size] = zeros[: self._value_size]
        mm[b1 : b1 + self._value_size] = zeros[: self._value_size]
        mm[base + SLOT_HEADER : base + SLOT_HEADER + self._key_size] = zeros[: self._key_size]
        for f in (S_HASH, S_LEN0, S_LEN1, S_EXPIRY, S_FLAGS, S_READS, S_PROMOTED_READS,
                  S_PROMOTED_AT, S_KEYLEN):
            W[w + f] = 0


def _as_bytes(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"values are bytes or str, not {type(value).__name__}")
