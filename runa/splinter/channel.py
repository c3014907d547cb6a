"""Channels: rings of variable-length records in the segment, with futex wake-up.

A channel is a header (layout.py ``C_*`` words, name, waiting flags, subscriber table) and a ring
of ``channel_capacity`` bytes. Positions are monotonic byte counts; a record is a u64 length and
the bytes, padded to 8; a record that would straddle the end is preceded by a WRAP marker.

- queue: one consumer, its owner (pid + start time). Producers append under the channel's
  kernel-released lock, beyond the published tail, and publish with one store of the tail: a
  producer killed mid-append leaves nothing visible. Full -> Backpressure; unread data is never
  overwritten.
- broadcast: many subscribers, each with a cursor in the subscriber table. The writer never waits
  for them: it announces the bytes it will overwrite (``reserve``), writes, publishes the tail. A
  subscriber whose unread data was overwritten is dropped, counted in the channel's ``dropped``
  word, and told so (``SubscriberDropped``).

Waiting: a reader raises its "waiting" byte and FUTEX_WAITs on the low 32 bits of the tail; a
writer issues FUTEX_WAKE only if some waiting byte is set (the wake costs a syscall).

Fast path: where the optional C extension ``_fastchan`` is built, a send is one call to it (lock,
append, publish, wake) and so is a receive (read, or wait with the GIL released and read). It
writes the same bytes in the same order as the Python code here and returns False for anything
unusual (lock taken, stale channel, full queue, dropped subscriber), which then runs the Python
path below, so errors and recovery have one implementation. Measured in bench/bus.py ("Wake").
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from runa.splinter import holder as kernel_hold
from runa.splinter.errors import (
    Backpressure,
    ChannelBusy,
    ChannelError,
    ChannelNotFound,
    ChannelTableFull,
    InternalError,
    MessageTooLarge,
    SubscriberDropped,
)
from runa.splinter.futex import Futex, Timespec
from runa.splinter.layout import (
    C_BACKPRESSURE,
    C_CREATED,
    C_DROPPED,
    C_FLAGS_OFF,
    C_HEAD,
    C_KIND,
    C_NAME_OFF,
    C_NAMELEN,
    C_OPTIONS,
    C_OWNER_PID,
    C_OWNER_START,
    C_RECEIVED,
    C_RESERVE,
    C_SENT,
    C_STATE,
    C_TAIL,
    CHAN_ACTIVE,
    CHAN_FREE,
    CHAN_SERVICE,
    CTR_RECOVERED,
    HDR_COUNTERS,
    KIND_BROADCAST,
    KIND_QUEUE,
    LOCK_CHANNEL_TABLE,
    MAX_CHANNEL_NAME,
    MUTEX_SIZE,
    REC_HEADER,
    REC_WRAP,
    SUB_ACTIVE,
    SUB_CURSOR,
    SUB_FREE,
    SUB_PID,
    SUB_START,
    SUB_STATE,
)
from runa.splinter.liveness import is_alive
from runa.splinter.locks import WriterLocks
from runa.splinter.segment import Segment

try:
    import runa.splinter._fastchan as _fastchan
except ImportError:  # built without a C compiler: the pure-Python path does the same, slower
    _fastchan = None  # type: ignore[assignment]

KINDS = {"queue": KIND_QUEUE, "broadcast": KIND_BROADCAST}
KIND_NAMES = {v: k for k, v in KINDS.items()}


def _check_name(name: object) -> bytes:
    if not isinstance(name, str) or not name:
        raise ChannelError(str(name), "channel names are non-empty strings")
    nb = name.encode("utf-8", "surrogatepass")
    if len(nb) > MAX_CHANNEL_NAME:
        raise ChannelError(name, f"name is {len(nb)} bytes; at most {MAX_CHANNEL_NAME}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ChannelError(name, "name is not valid UTF-8") from None
    return nb


@dataclass(frozen=True)
class SubscriberInfo:
    index: int
    pid: int
    alive: bool
    lag_bytes: int


@dataclass(frozen=True)
class ChannelInfo:
    """A snapshot of one channel for export/scope and the keeper."""

    name: str
    index: int
    kind: str
    owner_pid: int
    owner_alive: bool
    depth_bytes: int  # queue: unread bytes; broadcast: bytes held in the ring
    capacity: int
    sent: int
    received: int
    dropped: int
    backpressure: int
    subscribers: tuple[SubscriberInfo, ...]


@dataclass(frozen=True)
class QueueOwner:
    """Who consumes a queue now: (pid, start time) and whether that process still runs."""

    pid: int
    start: int
    alive: bool
    service: bool  # a service's queue: it waits for the next owner when this one dies


@dataclass(frozen=True)
class Reaped:
    """One thing ``reap`` freed: a queue or broadcast channel, or a broadcast subscriber."""

    channel: str
    what: str  # "queue" | "broadcast" | "subscriber" | "lagging-subscriber"
    pid: int
    unread_bytes: int = 0


class ChannelTable:
    """The channel table of one open segment: lookup, create/adopt, free, reap."""

    def __init__(
        self,
        segment: Segment,
        locks: WriterLocks,
        futex: Futex,
        identity: tuple[int, int],
        *,
        write_hook: Callable[[], None] | None = None,
        is_alive: Callable[[int, int], bool] = is_alive,
        native: bool = True,
    ) -> None:
        """``native=False`` keeps every handle on the pure-Python path (tests compare the two);
        so does a ``write_hook``, which must run half-way through each append."""
        self.segment = segment
        self.layout = segment.layout
        self.geometry = segment.geometry
        self.locks = locks
        self.futex = futex
        self.identity = identity
        self.write_hook = write_hook
        self._alive = is_alive
        self.W = segment.words
        self.mm = segment.mm
        self.native = native and _fastchan is not None and write_hook is None
        self._held: set[int] = set()  # queues whose hold byte this process has (holder.py)

    # -- lookup -----------------------------------------------------------------------------

    def _name_at(self, c: int) -> bytes:
        off = self.layout.channel(c)
        n = min(self.W[(off >> 3) + C_NAMELEN], MAX_CHANNEL_NAME)
        return self.mm[off + C_NAME_OFF : off + C_NAME_OFF + n]

    def find(self, name: str) -> tuple[int, int] | None:
        """(index, state word) of the active channel called ``name``, lock-free; or None."""
        nb = _check_name(name)
        W = self.W
        for c in range(self.geometry.channels):
            cw = self.layout.channel(c) >> 3
            st = W[cw + C_STATE]
            if st & 3 != CHAN_ACTIVE:
                continue
            same = self._name_at(c) == nb
            if W[cw + C_STATE] == st and same:
                return c, st
        return None

    def _find_locked(self, nb: bytes) -> tuple[int | None, int | None]:
        """Table lock held: (index of the channel called nb, index of the first free entry)."""
        found = free = None
        for c in range(self.geometry.channels):
            st = self.W[(self.layout.channel(c) >> 3) + C_STATE]
            if st & 3 == CHAN_ACTIVE:
                if self._name_at(c) == nb:
                    found = c
            elif free is None:
                free = c
        return found, free

    # -- create / adopt / free ----------------------------------------------------------------

    def owner(self, name: str) -> QueueOwner | None:
        """The consumer of queue ``name`` (None: no such queue), lock-free."""
        found = self.find(name)
        if found is None:
            return None
        cw = self.layout.channel(found[0]) >> 3
        W = self.W
        if W[cw + C_KIND] != KIND_QUEUE:
            return None
        pid, start = W[cw + C_OWNER_PID], W[cw + C_OWNER_START]
        return QueueOwner(pid, start, self._alive(pid, start),
                          bool(W[cw + C_OPTIONS] & CHAN_SERVICE))

    def open_channel(self, name: str, kind: str, *, take_ownership: bool,
                     service: bool = False) -> tuple[int, int]:
        """Find or create channel ``name`` of ``kind``; returns (index, state word).

        ``take_ownership`` (queues): record this process as the consumer. A queue whose owner is
        alive and is another process raises ChannelBusy; one whose owner died is adopted with its
        unread messages (a reincarnated service finds its requests waiting). ``service`` marks
        the queue as a service's well-known one, which ``reap`` keeps when its owner dies.
        """
        nb = _check_name(name)
        want = KINDS[kind]
        W, lay = self.W, self.layout
        pid, start = self.identity
        with self.locks.hold(LOCK_CHANNEL_TABLE):
            found, free = self._find_locked(nb)
            if found is not None:
                cw = lay.channel(found) >> 3
                have = W[cw + C_KIND]
                if have != want:
                    raise ChannelError(name, f"exists as a {KIND_NAMES.get(have, have)} channel")
                if take_ownership:
                    owner = (W[cw + C_OWNER_PID], W[cw + C_OWNER_START])
                    if owner != (pid, start) and self._alive(*owner):
                        raise ChannelBusy(
                            name, f"owned by live pid {owner[0]}; a queue has one consumer"
                        )
                    # The record is writable by any process of the uid: the kernel's hold
                    # decides, taken before the record is rewritten (holder.py).
                    if not kernel_hold.take(self.segment.fd, found):
                        held_by = kernel_hold.holder(self.segment.fd, found)
                        raise ChannelBusy(
                            name, f"held by live pid {held_by} as the kernel says (its owner "
                            "record looks dead); a queue has one consumer")
                    self._held.add(found)
                    with self.locks.hold(lay.channel_lock(found)):
                        W[cw + C_OWNER_PID] = pid
                        W[cw + C_OWNER_START] = start
                        if service:
                            W[cw + C_OPTIONS] |= CHAN_SERVICE
                return found, W[cw + C_STATE]
            if free is None:
                raise ChannelTableFull(
                    name, f"all {self.geometry.channels} channels are in use (reap dead owners?)"
                )
            c = free
            off = lay.channel(c)
            cw = off >> 3
            with self.locks.hold(self.layout.channel_lock(c)):
                old = W[cw + C_STATE]
                for i in range(1, lay.chan_subs_off >> 3):
                    W[cw + i] = 0
                for s in range(self.geometry.subscribers):
                    sw = lay.subscriber(c, s) >> 3
                    sst = W[sw + SUB_STATE]  # generations only grow, entry by entry
                    W[sw + SUB_STATE] = (((sst >> 2) + 1) << 2) | SUB_FREE
                    W[sw + SUB_PID] = W[sw + SUB_START] = W[sw + SUB_CURSOR] = 0
                self.mm[off + C_NAME_OFF : off + C_NAME_OFF + len(nb)] = nb
                W[cw + C_NAMELEN] = len(nb)
                W[cw + C_KIND] = want
                W[cw + C_OWNER_PID] = pid
                W[cw + C_OWNER_START] = start
                W[cw + C_OPTIONS] = CHAN_SERVICE if service and want == KIND_QUEUE else 0
                W[cw + C_CREATED] = time.time_ns()
                st = (((old >> 2) + 1) << 2) | CHAN_ACTIVE
                W[cw + C_STATE] = st  # publish
            if want == KIND_QUEUE and take_ownership:
                self._hold(c)
            return c, st

    def _hold(self, index: int) -> None:
        if kernel_hold.take(self.segment.fd, index):
            self._held.add(index)

    def release(self, index: int) -> None:
        """This process no longer consumes channel ``index``: let the kernel's record go."""
        if index in self._held:
            self._held.discard(index)
            kernel_hold.release(self.segment.fd, index)

    def holder(self, name: str) -> int | None:
        """The pid the kernel says consumes queue ``name`` (``runa.splinter.holder``); None
        when no live process holds it, or when ``name`` is not a queue."""
        found = self.find(name)
        if found is None or self.W[(self.layout.channel(found[0]) >> 3) + C_KIND] != KIND_QUEUE:
            return None
        if found[0] in self._held:
            return os.getpid()
        return kernel_hold.holder(self.segment.fd, found[0])

    def _free_locked(self, c: int) -> None:
        """Table and channel locks held: mark the channel free and wake anyone waiting on it."""
        W = self.W
        cw = self.layout.channel(c) >> 3
        st = W[cw + C_STATE]
        W[cw + C_STATE] = (((st >> 2) + 1) << 2) | CHAN_FREE
        self.futex.wake(self.segment.base_address + ((cw + C_TAIL) << 3))

    def free(self, index: int, state: int) -> bool:
        """Free channel ``index`` if it still has ``state`` (an owner closing its queue)."""
        with self.locks.hold(LOCK_CHANNEL_TABLE), self.locks.hold(self.layout.channel_lock(index)):
            if self.W[(self.layout.channel(index) >> 3) + C_STATE] != state:
                return False
            self._free_locked(index)
        return True

    # -- subscribers ----------------------------------------------------------------------------

    def add_subscriber(self, c: int, state: int, name: str) -> tuple[int, int]:
        """Claim a subscriber entry on broadcast channel ``c``; cursor starts at the tail."""
        W, lay = self.W, self.layout
        cw = lay.channel(c) >> 3
        pid, start = self.identity
        with self.locks.hold(self.layout.channel_lock(c)):
            if W[cw + C_STATE] != state:
                raise ChannelNotFound(name, "was freed while subscribing")
            for s in range(self.geometry.subscribers):
                sw = lay.subscriber(c, s) >> 3
                sst = W[sw + SUB_STATE]
                if sst & 3 == SUB_FREE:
                    W[sw + SUB_PID] = pid
                    W[sw + SUB_START] = start
                    W[sw + SUB_CURSOR] = W[cw + C_TAIL]
                    new = (((sst >> 2) + 1) << 2) | SUB_ACTIVE
                    W[sw + SUB_STATE] = new
                    self.mm[lay.channel(c) + C_FLAGS_OFF + s] = 0
                    return s, new
        raise ChannelTableFull(name, f"all {self.geometry.subscribers} subscriber entries taken")

    def drop_subscriber(self, c: int, s: int, sub_state: int, *, count: bool) -> bool:
        """Free subscriber ``s`` if it still has ``sub_state``; count it as dropped if asked."""
        W, lay = self.W, self.layout
        cw = lay.channel(c) >> 3
        sw = lay.subscriber(c, s) >> 3
        with self.locks.hold(self.layout.channel_lock(c)):
            if W[sw + SUB_STATE] != sub_state:
                return False
            W[sw + SUB_STATE] = (((sub_state >> 2) + 1) << 2) | SUB_FREE
            if count:
                W[cw + C_DROPPED] += 1
        self.futex.wake(self.segment.base_address + ((cw + C_TAIL) << 3))
        return True

    # -- inspection and reaping -----------------------------------------------------------------

    def info(self) -> list[ChannelInfo]:
        """Snapshot of every active channel (lock-free; numbers may be a moment old)."""
        out = []
        W, lay, cap = self.W, self.layout, self.geometry.channel_capacity
        for c in range(self.geometry.channels):
            cw = lay.channel(c) >> 3
            if W[cw + C_STATE] & 3 != CHAN_ACTIVE:
                continue
            kind = W[cw + C_KIND]
            tail = W[cw + C_TAIL]
            subs = []
            if kind == KIND_BROADCAST:
                for s in range(self.geometry.subscribers):
                    sw = lay.subscriber(c, s) >> 3
                    if W[sw + SUB_STATE] & 3 == SUB_ACTIVE:
                        subs.append(SubscriberInfo(
                            s, W[sw + SUB_PID], self._alive(W[sw + SUB_PID], W[sw + SUB_START]),
                            tail - W[sw + SUB_CURSOR],
                        ))
                depth = min(tail, cap)
            else:
                depth = tail - W[cw + C_HEAD]
            out.append(ChannelInfo(
                name=self._name_at(c).decode("utf-8", "replace"), index=c,
                kind=KIND_NAMES.get(kind, str(kind)), owner_pid=W[cw + C_OWNER_PID],
                owner_alive=self._alive(W[cw + C_OWNER_PID], W[cw + C_OWNER_START]),
                depth_bytes=depth, capacity=cap, sent=W[cw + C_SENT],
                received=W[cw + C_RECEIVED], dropped=W[cw + C_DROPPED],
                backpressure=W[cw + C_BACKPRESSURE], subscribers=tuple(subs),
            ))
        return out

    def reap(self) -> list[Reaped]:
        """Free what dead processes left behind; drop broadcast subscribers that lag too far.

        Queues whose owner is dead are freed (unread messages are lost: nobody will read them),
        except a service's queue (``CHAN_SERVICE``): it is kept, requests included, until the
        service's next incarnation adopts it or the service closes it on a clean stop.
        Broadcast subscribers whose process is dead are freed; live ones lagging more than the
        ring are dropped and counted; a broadcast channel is freed when its creator is dead and
        no live process subscribes.
        """
        out: list[Reaped] = []
        W, lay, cap = self.W, self.layout, self.geometry.channel_capacity
        with self.locks.hold(LOCK_CHANNEL_TABLE):
            for c in range(self.geometry.channels):
                cw = lay.channel(c) >> 3
                if W[cw + C_STATE] & 3 != CHAN_ACTIVE:
                    continue
                name = self._name_at(c).decode("utf-8", "replace")
                with self.locks.hold(self.layout.channel_lock(c)):
                    pid, start = W[cw + C_OWNER_PID], W[cw + C_OWNER_START]
                    owner_alive = self._alive(pid, start)
                    if W[cw + C_KIND] == KIND_QUEUE:
                        if not owner_alive and not W[cw + C_OPTIONS] & CHAN_SERVICE:
                            unread = W[cw + C_TAIL] - W[cw + C_HEAD]
                            self._free_locked(c)
                            out.append(Reaped(name, "queue", pid, unread))
                        continue
                    live_subs = 0
                    tail = W[cw + C_TAIL]
                    for s in range(self.geometry.subscribers):
                        sw = lay.subscriber(c, s) >> 3
                        sst = W[sw + SUB_STATE]
                        if sst & 3 != SUB_ACTIVE:
                            continue
                        spid = W[sw + SUB_PID]
                        if not self._alive(spid, W[sw + SUB_START]):
                            W[sw + SUB_STATE] = (((sst >> 2) + 1) << 2) | SUB_FREE
                            out.append(Reaped(name, "subscriber", spid))
                        else:
                            live_subs += 1  # a live process, even if dropped just below
                            if tail - W[sw + SUB_CURSOR] > cap:
                                W[sw + SUB_STATE] = (((sst >> 2) + 1) << 2) | SUB_FREE
                                W[cw + C_DROPPED] += 1
                                out.append(Reaped(name, "lagging-subscriber", spid))
                    if not owner_alive and live_subs == 0:
                        self._free_locked(c)
                        out.append(Reaped(name, "broadcast", pid))
        return out


class _Handle:
    """What every channel handle knows: where the channel is and which incarnation of it."""

    def __init__(self, table: ChannelTable, name: str, index: int, state: int) -> None:
        self.table = table
        self.name = name
        self._bind(index, state)

    def _bind(self, index: int, state: int) -> None:
        table = self.table
        lay, g = table.layout, table.geometry
        self.index = index
        self.state = state
        self._W = table.W
        self._mm = table.mm
        self._cw = lay.channel(index) >> 3
        self._ring = lay.channel_ring(index)
        self._cap = g.channel_capacity
        self._max = g.max_envelope
        self._flags = lay.channel(index) + C_FLAGS_OFF
        self._flags_end = self._flags + g.subscribers
        self._no_waiters = bytes(g.subscribers)
        # Word indices and bound callables, resolved once: the send and wake-up paths are the
        # bus's latency floor, and every lookup saved there shows in bench/bus.py.
        cw = self._cw
        self._w_state, self._w_tail, self._w_head = cw + C_STATE, cw + C_TAIL, cw + C_HEAD
        self._w_reserve, self._w_sent = cw + C_RESERVE, cw + C_SENT
        self._is_queue = table.W[cw + C_KIND] == KIND_QUEUE  # fixed for this incarnation
        self._futex_ptr = Futex.pointer(table.segment.base_address + ((cw + C_TAIL) << 3))
        self._wake = table.futex.wake_ptr
        self._wait = table.futex.wait_ptr
        self._lock = table.locks.pointer(lay.channel_lock(index))
        self._trylock = table.locks.trylock
        self._unlock = table.locks.unlock
        self._fast: _fastchan.Channel | None = None

    def _native(self, **reader: int) -> _fastchan.Channel | None:
        """This handle's C fast path (None without the extension): the layout's word indices
        and offsets, so the C code holds no layout of its own."""
        t = self.table
        if not t.native:
            return None
        cw = self._cw
        return _fastchan.Channel(
            self._W, state=self.state, state_word=cw + C_STATE, tail_word=cw + C_TAIL,
            head_word=cw + C_HEAD, reserve_word=cw + C_RESERVE, sent_word=cw + C_SENT,
            received_word=cw + C_RECEIVED, recovered_word=HDR_COUNTERS // 8 + CTR_RECOVERED,
            flags=self._flags, nflags=self._flags_end - self._flags, ring=self._ring,
            cap=self._cap, max_record=self._max,
            lock=t.layout.locks_off + t.layout.channel_lock(self.index) * MUTEX_SIZE,
            wrap=REC_WRAP, queue=self._is_queue, **reader,
        )

    def _gone(self) -> ChannelNotFound:
        return ChannelNotFound(self.name, "was closed or reaped since it was opened")


class _Stale(Exception):
    """The channel entry changed incarnation under the sender."""


class Sender(_Handle):
    """Appends messages to a channel (any process may send).

    If the channel is freed and re-created under the same name (its owner restarted), the sender
    finds the new incarnation by name on its next send.
    """

    def _bind(self, index: int, state: int) -> None:
        super()._bind(index, state)
        self._fast = self._native()

    def send(self, data: bytes) -> None:
        """Append one message.

        Raises Backpressure (queue full), MessageTooLarge, ChannelNotFound.
        """
        fast = self._fast
        if fast is not None and fast.append(data):
            return
        try:
            self._append(data)
        except _Stale:
            found = self.table.find(self.name)
            if found is None:
                raise self._gone() from None
            self._bind(*found)
            try:
                self._append(data)
            except _Stale:
                raise self._gone() from None

    def _append(self, data: bytes) -> None:
        n = len(data)
        if n > self._max:
            raise MessageTooLarge(n, self._max)
        rec = REC_HEADER + ((n + 7) & ~7)
        W, mm, cap = self._W, self._mm, self._cap
        if W[self._w_state] != self.state:  # also: a closed bus raises here, before the lock
            raise _Stale
        lk = self._lock
        rc = self._trylock(lk)
        if rc:
            self.table.locks.settle(lk, rc)
        try:
            if W[self._w_state] != self.state:
                raise _Stale
            tail = W[self._w_tail]
            pos = tail % cap
            room = cap - pos
            pad = room if rec > room else 0
            need = pad + rec
            if self._is_queue:
                free = cap - (tail - W[self._w_head])
                if need > free:
                    W[self._cw + C_BACKPRESSURE] += 1
                    raise Backpressure(self.name, need, free)
            else:
                W[self._w_reserve] = tail + need  # subscribers: these bytes are going
            ring = self._ring
            if pad:
                W[(ring + pos) >> 3] = REC_WRAP
                pos = 0
            off = ring + pos
            W[off >> 3] = n
            off += REC_HEADER
            hook = self.table.write_hook
            if hook is None:
                mm[off : off + n] = data
            else:
                half = n // 2
                mm[off : off + half] = data[:half]
                hook()
                mm[off + half : off + n] = data[half:]
            W[self._w_tail] = tail + need  # publish: one store
            W[self._w_sent] += 1
        finally:
            self._unlock(lk)
        # The unlock is an atomic read-modify-write (a full barrier on x86), so this read of
        # the waiting flags cannot be satisfied before the tail store is visible.
        if mm[self._flags : self._flags_end] != self._no_waiters:
            self._wake(self._futex_ptr)


class _Reader(_Handle):
    _flag: int

    def _bind(self, index: int, state: int) -> None:
        super()._bind(index, state)
        self._ts = Timespec()  # this reader's wait timeout, reused by every wait
        self._ts_ref = ctypes.byref(self._ts)

    def _next(self) -> bytes | None:
        raise NotImplementedError

    def _position(self) -> int:
        raise NotImplementedError

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next message, waiting up to ``timeout`` seconds (None = forever, 0 = poll).

        Returns None on timeout. Blocks in FUTEX_WAIT: no CPU is used while waiting.
        """
        fast = self._fast
        if fast is not None:
            data = fast.receive(timeout)
            if data is not False:
                return data
        data = self._next()
        if data is not None or timeout == 0:
            return data
        deadline = None if timeout is None else time.monotonic() + timeout
        W, mm, flag = self._W, self._mm, self._flag
        tail_word = self._w_tail
        ts, ts_ref = self._ts, self._ts_ref
        while True:
            mm[flag] = 1
            tail = W[tail_word]
            if tail == self._position():
                if deadline is None:
                    self._wait(self._futex_ptr, tail, None)
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        mm[flag] = 0
                        return None
                    ts.set(remaining)
                    self._wait(self._futex_ptr, tail, ts_ref)
            mm[flag] = 0
            data = self._next()
            if data is not None:
                return data


class QueueReceiver(_Reader):
    """The one consumer of a queue channel (its owner)."""

    def __init__(self, table: ChannelTable, name: str, index: int, state: int) -> None:
        super().__init__(table, name, index, state)
        self._flag = self._flags
        self._fast = self._native(position_word=self._cw + C_HEAD, flag=self._flag)

    def _position(self) -> int:
        return self._W[self._cw + C_HEAD]

    def _next(self) -> bytes | None:
        W, cw, cap, ring = self._W, self._cw, self._cap, self._ring
        if W[cw + C_STATE] != self.state:
            raise self._gone()
        head = W[cw + C_HEAD]
        while head != W[cw + C_TAIL]:
            pos = head % cap
            n = W[(ring + pos) >> 3]
            if n == REC_WRAP:
                head += cap - pos
                W[cw + C_HEAD] = head
                continue
            if n > self._max:
                raise InternalError(f"channel {self.name!r}: record of {n} bytes at {head}")
            off = ring + pos + REC_HEADER
            data = self._mm[off : off + n]
            W[cw + C_HEAD] = head + REC_HEADER + ((n + 7) & ~7)
            W[cw + C_RECEIVED] += 1
            return data
        return None

    def pending(self) -> int:
        """Unread bytes in the queue."""
        return self._W[self._cw + C_TAIL] - self._W[self._cw + C_HEAD]

    def close(self) -> None:
        """Free the queue (unread messages are discarded)."""
        self.table.release(self.index)
        self.table.free(self.index, self.state)


class Subscriber(_Reader):
    """One subscriber of a broadcast channel, reading from its own cursor."""

    def __init__(
        self, table: ChannelTable, name: str, index: int, state: int, slot: int, sub_state: int
    ) -> None:
        super().__init__(table, name, index, state)
        self._attach(slot, sub_state)

    def _attach(self, slot: int, sub_state: int) -> None:
        self.slot = slot
        self.sub_state = sub_state
        self._sw = self.table.layout.subscriber(self.index, slot) >> 3
        self._flag = self._flags + slot
        self.dropped = False
        self._fast = self._native(position_word=self._sw + SUB_CURSOR, flag=self._flag,
                                  substate_word=self._sw + SUB_STATE, sub_state=sub_state)

    def _position(self) -> int:
        return self._W[self._sw + SUB_CURSOR]

    def _dropped(self, cursor: int, reason: str) -> SubscriberDropped:
        self.table.drop_subscriber(self.index, self.slot, self.sub_state, count=True)
        self.dropped = True
        lag = self._W[self._cw + C_TAIL] - cursor
        return SubscriberDropped(
            self.name, f"subscriber {self.slot} {reason} ({lag} bytes behind, ring holds "
            f"{self._cap}); messages were lost; call resubscribe()",
        )

    def _next(self) -> bytes | None:
        W, cw, sw, cap, ring = self._W, self._cw, self._sw, self._cap, self._ring
        if W[cw + C_STATE] != self.state:
            raise self._gone()
        if W[sw + SUB_STATE] != self.sub_state:
            self.dropped = True
            raise SubscriberDropped(
                self.name, f"subscriber {self.slot} was dropped (lagging or reaped); "
                "messages were lost; call resubscribe()",
            )
        cur = W[sw + SUB_CURSOR]
        while True:
            tail = W[cw + C_TAIL]
            if cur == tail:
                return None
            if tail - cur > cap:
                raise self._dropped(cur, "fell behind the ring")
            pos = cur % cap
            n = W[(ring + pos) >> 3]
            if n == REC_WRAP:
                if W[cw + C_RESERVE] - cur > cap:
                    raise self._dropped(cur, "was overtaken while reading")
                cur += cap - pos
                W[sw + SUB_CURSOR] = cur
                continue
            if n > self._max:
                if W[cw + C_RESERVE] - cur > cap:
                    raise self._dropped(cur, "was overtaken while reading")
                raise InternalError(f"channel {self.name!r}: record of {n} bytes at {cur}")
            off = ring + pos + REC_HEADER
            data = self._mm[off : off + n]
            if W[cw + C_RESERVE] - cur > cap:  # the writer may have overwritten what we copied
                raise self._dropped(cur, "was overtaken while reading")
            W[sw + SUB_CURSOR] = cur + REC_HEADER + ((n + 7) & ~7)
            return data

    def lag(self) -> int:
        """Bytes published but not yet read by this subscriber."""
        return self._W[self._cw + C_TAIL] - self._W[self._sw + SUB_CURSOR]

    def resubscribe(self) -> None:
        """After SubscriberDropped: take a fresh entry, starting at the newest message."""
        if not self.dropped:
            self.table.drop_subscriber(self.index, self.slot, self.sub_state, count=False)
        slot, sub_state = self.table.add_subscriber(self.index, self.state, self.name)
        self._attach(slot, sub_state)

    def close(self) -> None:
        """Leave the channel (frees this subscriber entry)."""
        if not self.dropped:
            self.table.drop_subscriber(self.index, self.slot, self.sub_state, count=False)
            self.dropped = True
