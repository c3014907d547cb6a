"""On-disk (in-memory) layout of a splinter segment: geometry, offsets and word indices.

Everything in a segment is little-endian and 8-byte aligned, so each 64-bit field can be read and
written as one machine word through a ``memoryview`` cast to ``'Q'`` (a single aligned load or
store, which is what the seqlock needs). ``Layout`` turns a ``Geometry`` into absolute offsets once,
so the hot paths only do additions. docs/protocol.md § "Segment layout" describes the same map.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

from runa.splinter.errors import GeometryError

if sys.byteorder != "little":  # pragma: no cover - every supported target is little-endian
    raise ImportError("runa.splinter needs a little-endian machine (x86-64 or arm64)")

MAGIC = b"RUNASPL\x00"
LAYOUT_VERSION = 1
PAGE = 4096
HEADER_SIZE = PAGE

# Header: magic, version, header size, total size, geometry (8 u32), offsets (4 u64),
# created wall-clock ns, creator pid, flags. Store counters follow at HDR_COUNTERS.
HEADER = struct.Struct("<8sIIQ8IQQQQQII")
HDR_COUNTERS = 128  # byte offset of the store counters (u64 each)
CTR_LIVE, CTR_TOMBS, CTR_INSERTS, CTR_UNSETS, CTR_EVICTIONS, CTR_RECOVERED = range(6)
# Added in place of reserved (zero) header bytes, so version-1 segments made before them read 0.
CTR_EXPIRED, CTR_IDLE_EXPIRED, CTR_STORE_FULL = 6, 7, 8
# The keeper's counters, kept in the header too so `runa bus export` can read them from outside.
K_SWEEPS, K_SWEEP_NS, K_SWEEP_MAX_NS, K_SWEEP_AT, K_PROMOTIONS, K_REAPED = range(9, 15)
K_REPAIRS = 15  # sweeps that found the store counters wrong or a dead writer's leftovers
STORE_COUNTERS = (
    "live", "tombstones", "inserts", "unsets", "evictions", "lock_recoveries", "expired",
    "idle_expired", "store_full",
)
KEEPER_COUNTERS = (
    "sweeps", "last_sweep_ns", "max_sweep_ns", "last_sweep_at_ns", "promotions", "reaped",
    "repairs",
)

# -- slot: a 128-byte header, then the key, then two value buffers ------------------------------
# word offsets inside the slot header
S_EPOCH = 0  # seqlock epoch; bit 0 selects the current value buffer
S_KEYGEN = 1  # generation << 2 | state; changes whenever the slot changes owner key
S_HASH = 2  # crc32 of the key bytes
S_KEYLEN = 3
S_LEN0 = 4  # length of the value in buffer 0
S_LEN1 = 5
S_EXPIRY = 6  # CLOCK_MONOTONIC ns after which the key is gone; 0 = no expiry
S_FLAGS = 7  # bit 0 = ephemeral
S_ATIME = 8  # CLOCK_MONOTONIC ns of the last read or write (readers update it at most once a ms)
S_MTIME = 9  # CLOCK_MONOTONIC ns of the last write
S_READS = 10  # reads since the key was inserted (approximate: concurrent readers may lose counts)
S_PROMOTED_READS = 11  # ``reads`` when the keeper last issued a promote event for the key
S_PROMOTED_AT = 12  # CLOCK_MONOTONIC ns of that event; 0 = never promoted
# words 13..15 reserved
SLOT_HEADER = 128

STATE_EMPTY, STATE_LIVE, STATE_TOMB = 0, 1, 2
FLAG_EPHEMERAL = 1

# -- channel: a header (with subscriber table), then the ring -----------------------------------
C_STATE = 0  # generation << 2 | state (FREE 0, ACTIVE 1)
C_KIND = 1  # KIND_QUEUE or KIND_BROADCAST
C_OWNER_PID = 2
C_OWNER_START = 3  # owner's start time (clock ticks since boot, /proc/<pid>/stat field 22)
C_TAIL = 4  # published write position (bytes, monotonic); its low 32 bits are the futex word
C_RESERVE = 5  # broadcast: bytes up to here may be being overwritten
C_HEAD = 6  # queue: consumer position
C_DROPPED = 7  # broadcast: subscribers dropped for lagging
C_SENT = 8  # messages published
C_BACKPRESSURE = 9  # sends refused because the queue was full
C_NAMELEN = 10
C_CREATED = 11  # wall-clock ns at creation
C_RECEIVED = 12  # queue: messages consumed
C_OPTIONS = 13  # queue: CHAN_SERVICE when it is a service's well-known queue
C_NAME_OFF = 128  # byte offset of the name (words 14..15 reserved)
MAX_CHANNEL_NAME = 64
C_FLAGS_OFF = C_NAME_OFF + MAX_CHANNEL_NAME  # one "I am waiting" byte per subscriber
SUB_WORDS = 4  # per subscriber: state/gen, pid, start time, cursor
SUB_STATE, SUB_PID, SUB_START, SUB_CURSOR = range(4)
SUB_SIZE = SUB_WORDS * 8

CHAN_FREE, CHAN_ACTIVE = 0, 1
CHAN_SERVICE = 1  # C_OPTIONS bit: kept, with its requests, when the owner dies (not reaped)
KIND_QUEUE, KIND_BROADCAST = 1, 2
SUB_FREE, SUB_ACTIVE = 0, 1
REC_HEADER = 8  # u64 length before each ring record
REC_WRAP = 0xFFFF_FFFF_FFFF_FFFF  # "skip to the start of the ring"

# -- stats: one 128-byte entry per component ----------------------------------------------------
STAT_ENTRY = 128
STAT_STATE, STAT_NAMELEN = 0, 1
STAT_NAME_OFF = 16
MAX_COMPONENT_NAME = 48
STAT_COUNTERS_OFF = STAT_NAME_OFF + MAX_COMPONENT_NAME  # 8 u64 counters
STAT_FIELDS = (
    "msgs_in", "msgs_out", "bad_schema", "backpressure", "errors", "bytes_in", "bytes_out",
    "faults_out",
)

# -- lock area: one robust shared pthread mutex per 64-byte entry (locks.py) ---------------------
MUTEX_SIZE = 64  # pthread_mutex_t is 40 bytes on x86-64 glibc, 48 on arm64; one cache line each
LOCK_STORE = 0  # KV inserts, unsets, evictions
LOCK_CHANNEL_TABLE = 1
LOCK_STATS_TABLE = 2
LOCK_SLOT_BASE = 3  # + slot index
# channel c's lock: Layout.channel_lock(c) (after the slot locks)


def align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class Geometry:
    """Fixed sizes of a segment, chosen at create time and recorded in its header."""

    slots: int = 2048
    max_key: int = 128
    max_value: int = 4096
    channels: int = 32
    channel_capacity: int = 128 * 1024
    subscribers: int = 16
    stats_entries: int = 64
    max_envelope: int = 60 * 1024

    def check(self) -> None:
        """Raise GeometryError naming the first field out of range."""
        limits = {
            "slots": (1, 1 << 24),
            "max_key": (1, 1024),
            "max_value": (1, 64 << 20),
            "channels": (0, 4096),
            "channel_capacity": (256, 1 << 31),
            "subscribers": (1, 64),
            "stats_entries": (0, 4096),
            "max_envelope": (1, 1 << 30),
        }
        for name, (lo, hi) in limits.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise GeometryError(f"geometry.{name} = {v!r}: must be an integer in [{lo}, {hi}]")
        if self.channel_capacity % 8:
            raise GeometryError(
                f"geometry.channel_capacity = {self.channel_capacity}: must be a multiple of 8"
            )
        if self.channels and self.max_envelope + REC_HEADER > self.channel_capacity // 2:
            raise GeometryError(
                f"geometry.max_envelope = {self.max_envelope}: must be at most half the "
                f"channel capacity ({self.channel_capacity}) minus {REC_HEADER}"
            )


class Layout:
    """Absolute byte offsets of every region of a segment with a given geometry."""

    def __init__(self, g: Geometry) -> None:
        g.check()
        self.geometry = g
        self.key_size = align(g.max_key, 8)
        self.value_size = align(g.max_value, 8)
        self.slot_stride = align(SLOT_HEADER + self.key_size + 2 * self.value_size, 64)
        self.slots_off = HEADER_SIZE
        flags = align(g.subscribers, 8)
        self.chan_subs_off = C_FLAGS_OFF + flags  # subscriber table inside the channel header
        self.chan_header = align(self.chan_subs_off + g.subscribers * SUB_SIZE, 64)
        self.chan_stride = align(self.chan_header + g.channel_capacity, 64)
        self.chans_off = align(self.slots_off + g.slots * self.slot_stride, PAGE)
        self.stats_off = align(self.chans_off + g.channels * self.chan_stride, PAGE)
        self.locks_off = align(self.stats_off + g.stats_entries * STAT_ENTRY, PAGE)
        self.lock_count = LOCK_SLOT_BASE + g.slots + g.channels
        self.total_size = align(self.locks_off + self.lock_count * MUTEX_SIZE, PAGE)

    def channel_lock(self, c: int) -> int:
        """Index of channel ``c``'s lock in the lock area."""
        return LOCK_SLOT_BASE + self.geometry.slots + c

    # byte offsets
    def slot(self, i: int) -> int:
        return self.slots_off + i * self.slot_stride

    def slot_key(self, i: int) -> int:
        return self.slot(i) + SLOT_HEADER

    def slot_buffer(self, i: int, which: int) -> int:
        return self.slot(i) + SLOT_HEADER + self.key_size + which * self.value_size

    def channel(self, c: int) -> int:
        return self.chans_off + c * self.chan_stride

    def channel_ring(self, c: int) -> int:
        return self.channel(c) + self.chan_header

    def subscriber(self, c: int, s: int) -> int:
        return self.channel(c) + self.chan_subs_off + s * SUB_SIZE

    def stat(self, e: int) -> int:
        return self.stats_off + e * STAT_ENTRY

    def pack_header(self, created_ns: int, pid: int) -> bytes:
        g = self.geometry
        return HEADER.pack(
            MAGIC, LAYOUT_VERSION, HEADER_SIZE, self.total_size,
            g.slots, g.max_key, g.max_value, g.channels, g.channel_capacity, g.subscribers,
            g.stats_entries, g.max_envelope,
            self.slots_off, self.chans_off, self.stats_off, self.locks_off, created_ns, pid, 0,
        )


@dataclass(frozen=True)
class HeaderInfo:
    """The decoded header of an existing segment."""

    magic: bytes
    version: int
    header_size: int
    total_size: int
    geometry: Geometry
    slots_off: int
    chans_off: int
    stats_off: int
    locks_off: int
    created_ns: int
    creator_pid: int


def unpack_header(raw: bytes) -> HeaderInfo:
    """Decode the first HEADER.size bytes; validation of the values is the caller's job."""
    f = HEADER.unpack_from(raw, 0)
    return HeaderInfo(
        magic=f[0], version=f[1], header_size=f[2], total_size=f[3],
        geometry=Geometry(*f[4:12]), slots_off=f[12], chans_off=f[13], stats_off=f[14],
        locks_off=f[15], created_ns=f[16], creator_pid=f[17],
    )
