"""``Bus``: one open segment with its KV store, channels and stats, for one process.

Threads may share one bus (writer locks are per-thread robust mutexes, readers take none). After
``fork`` open a new one in the child: the owner identity of queues and subscribers is the
(pid, start time) of the process that opened the bus.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from runa.splinter import envelope as env_mod
from runa.splinter import holder as kernel_hold
from runa.splinter.channel import (
    ChannelInfo,
    ChannelTable,
    QueueOwner,
    QueueReceiver,
    Reaped,
    Sender,
    Subscriber,
)
from runa.splinter.decay import hot_keys
from runa.splinter.errors import BadSchema, ChannelNotFound, SplinterError
from runa.splinter.futex import Futex
from runa.splinter.kv import KV
from runa.splinter.liveness import is_alive, self_identity
from runa.splinter.locks import WriterLocks
from runa.splinter.segment import BUSES, DEFAULT_DIR, Segment, segment_path
from runa.splinter.stats import ComponentStats, KeeperCounters, StatsTable

EVENTS_CHANNEL = "events"  # the broadcast channel of bus-wide events (promote, ...)
HOT_KEYS_EXPORTED = 10
_Raw = TypeVar("_Raw", bound=QueueReceiver | Subscriber)


def segment_paths(stack: str, directory: str = DEFAULT_DIR) -> list[str]:
    """The segment of every bus of ``stack``: these exactly, never those of another stack whose
    name starts the same (``runa-<stack>-*`` would also match stack ``<stack>-other``)."""
    return [segment_path(stack, bus, directory) for bus in BUSES]


class Bus:
    """The splinter bus as one process sees it.

    Test seams (never used in production): ``skip_recheck`` disables the KV reader's epoch
    re-check; ``write_hook`` is called half-way through every slot write and channel append;
    ``native=False`` keeps channels off their C fast path (tests and bench/bus.py compare them).
    """

    def __init__(
        self,
        segment: Segment,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        identity: tuple[int, int] | None = None,
        is_alive: Callable[[int, int], bool] = is_alive,
        skip_recheck: bool = False,
        write_hook: Callable[[], None] | None = None,
        native: bool = True,
    ) -> None:
        self.segment = segment
        self.path = segment.path
        self.geometry = segment.geometry
        self.identity = identity or self_identity()
        self.locks = WriterLocks(segment.base_address, segment.layout.locks_off, segment.words)
        self.futex = Futex()
        self.kv = KV(segment, self.locks, clock=clock, skip_recheck=skip_recheck,
                     write_hook=write_hook)
        self.channels = ChannelTable(segment, self.locks, self.futex, self.identity,
                                     write_hook=write_hook, is_alive=is_alive, native=native)
        self.stats = StatsTable(segment, self.locks)
        self.keeper_counters = KeeperCounters(segment)
        self._clock = clock
        self._claims: set[str] = set()  # requests this Bus claims (request_sender)
        # KV shorthands, bound directly (a delegating method would add a call to every get).
        self.get = self.kv.get
        self.set = self.kv.set
        self.unset = self.kv.unset
        self.list = self.kv.list

    @classmethod
    def open(cls, path: str, **kwargs: Any) -> Bus:
        """Open the segment at ``path`` (validated) as a bus."""
        seg = Segment.open(path)
        try:
            return cls(seg, **kwargs)
        except BaseException:
            seg.close()
            raise

    @classmethod
    def for_stack(cls, stack: str, bus: str = "main", directory: str = DEFAULT_DIR,
                  **kwargs: Any) -> Bus:
        """Open ``<directory>/runa-<stack>-<bus>``."""
        return cls.open(segment_path(stack, bus, directory), **kwargs)

    def close(self) -> None:
        self.segment.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_process(self) -> None:
        if os.getpid() != self.identity[0]:
            raise SplinterError(
                f"{self.path}: this Bus was opened by pid {self.identity[0]}; open a new one "
                "after fork (channel ownership belongs to the opening process)"
            )

    # -- channels ---------------------------------------------------------------------------

    def queue(self, name: str, *, stats: ComponentStats | None = None,
              service: bool = False) -> EnvelopeReceiver[QueueReceiver]:
        """Open (create or adopt) the queue ``name`` with this process as its one consumer.

        ``service``: the queue is a service's well-known one; when this process dies the keeper
        keeps it, requests included, for the next incarnation (a reply queue is freed).
        """
        self._check_process()
        idx, st = self.channels.open_channel(name, "queue", take_ownership=True, service=service)
        return EnvelopeReceiver(QueueReceiver(self.channels, name, idx, st), self, stats)

    def subscribe(self, name: str, *,
                  stats: ComponentStats | None = None) -> EnvelopeReceiver[Subscriber]:
        """Subscribe to broadcast channel ``name`` (created if missing), from the newest message."""
        self._check_process()
        idx, st = self.channels.open_channel(name, "broadcast", take_ownership=False)
        slot, sub_st = self.channels.add_subscriber(idx, st, name)
        return EnvelopeReceiver(Subscriber(self.channels, name, idx, st, slot, sub_st), self, stats)

    def sender(self, name: str, *, stats: ComponentStats | None = None) -> EnvelopeSender:
        """A sender to the existing channel ``name`` (ChannelNotFound if nobody opened it)."""
        found = self.channels.find(name)
        if found is None:
            raise ChannelNotFound(name, "no such channel (its owner has not opened it)")
        return EnvelopeSender(Sender(self.channels, name, *found), self, stats)

    def broadcast(self, name: str, *, stats: ComponentStats | None = None) -> EnvelopeSender:
        """A sender to broadcast channel ``name``, creating the channel if needed."""
        self._check_process()
        idx, st = self.channels.open_channel(name, "broadcast", take_ownership=False)
        return EnvelopeSender(Sender(self.channels, name, idx, st), self, stats)

    def queue_owner(self, name: str) -> QueueOwner | None:
        """Who consumes queue ``name`` now and whether it is alive (None: no such queue)."""
        return self.channels.owner(name)

    def queue_holder(self, name: str) -> int | None:
        """The pid that consumes queue ``name`` as the kernel says (not as the segment says,
        which any process of the uid can write); None when no live process holds it.
        ``runa.splinter.holder`` says how, and what releases a hold early."""
        return self.channels.holder(name)

    @contextlib.contextmanager
    def claim_request(self, envelope_id: str) -> Iterator[None]:
        """Claim request ``envelope_id`` as its sender, from before it is sent until the
        block ends (its answer came, or the wait ended): a service acting for the sender
        asks the kernel who claims it (``request_sender``; ``runa.splinter.holder``)."""
        if not kernel_hold.claim(self.segment.fd, envelope_id):
            raise SplinterError(f"{self.path}: request {envelope_id} is claimed by another "
                                "process; send it with a new id")
        self._claims.add(envelope_id)
        try:
            yield
        finally:
            self._claims.discard(envelope_id)
            kernel_hold.unclaim(self.segment.fd, envelope_id)

    def request_sender(self, envelope_id: str) -> int | None:
        """The pid that sent request ``envelope_id`` as the kernel says (the claimant of its
        id, ``claim_request``); None when no live process claims it."""
        if envelope_id in self._claims:
            return os.getpid()
        return kernel_hold.claimant(self.segment.fd, envelope_id)

    def reap(self) -> list[Reaped]:
        """Free channels and subscribers of dead processes (the keeper calls this)."""
        return self.channels.reap()

    def channel_info(self) -> list[ChannelInfo]:
        return self.channels.info()

    def component_stats(self, component: str) -> ComponentStats:
        return self.stats.component(component)

    def hot_keys(self, n: int = HOT_KEYS_EXPORTED) -> list[dict[str, Any]]:
        """The ``n`` most read live keys as plain data (reads since each key was inserted)."""
        now = self._clock()
        return [
            {"key": s.key, "reads": s.reads, "bytes": s.length, "ephemeral": s.ephemeral,
             "ttl_ms": max(0, (s.expiry_ns - now) // 1_000_000) if s.expiry_ns else None,
             "idle_ms": max(0, (now - s.atime_ns) // 1_000_000)}
            for s in hot_keys(self.kv, n)
        ]

    def export(self) -> dict[str, Any]:
        """Everything `runa bus export` shows, as plain data."""
        info = self.segment.info
        keeper: dict[str, Any] = dict(self.keeper_counters.get())
        at = keeper["last_sweep_at_ns"]
        keeper["last_sweep_age_ms"] = (self._clock() - at) // 1_000_000 if at else None
        return {
            "path": self.path,
            "layout_version": info.version,
            "geometry": vars(self.geometry).copy(),
            "total_size": info.total_size,
            "kv": self.kv.counts(),
            "keeper": keeper,
            "hot_keys": self.hot_keys(),
            "channels": [vars(c) | {"subscribers": [vars(s) for s in c.subscribers]}
                         for c in self.channel_info()],
            "stats": self.stats.snapshot(),
        }


class EnvelopeSender:
    """A channel sender that speaks envelopes (and raw bytes), counting into component stats."""

    def __init__(self, raw: Sender, bus: Bus, stats: ComponentStats | None) -> None:
        self.raw = raw
        self.name = raw.name
        self._limit = bus.geometry.max_envelope
        self._stats = stats

    def send_bytes(self, data: bytes) -> None:
        st = self._stats
        try:
            self.raw.send(data)
        except SplinterError as e:
            if st is not None and getattr(e, "code", None) == env_mod.Fault.BACKPRESSURE:
                st.incr("backpressure")
            raise
        if st is not None:
            st.incr("msgs_out")
            st.incr("bytes_out", len(data))

    def send(self, envelope: env_mod.Envelope) -> None:
        """Encode and append; Backpressure if a queue is full, MessageTooLarge over the limit."""
        data = env_mod.encode(envelope, self._limit)
        if self._stats is None:  # the common fast path: one call less before the wake-up
            self.raw.send(data)
            return
        self.send_bytes(data)
        if envelope.type == "error":
            self._stats.incr("faults_out")


class EnvelopeReceiver(Generic[_Raw]):
    """A queue receiver or broadcast subscriber that decodes envelopes and counts them."""

    def __init__(self, raw: _Raw, bus: Bus,
                 stats: ComponentStats | None) -> None:
        self.raw = raw
        self.name = raw.name
        self._limit = bus.geometry.max_envelope
        self._stats = stats

    def recv_bytes(self, timeout: float | None = None) -> bytes | None:
        data = self.raw.recv(timeout)
        if data is not None and self._stats is not None:
            self._stats.incr("msgs_in")
            self._stats.incr("bytes_in", len(data))
        return data

    def recv(self, timeout: float | None = None) -> env_mod.Envelope | None:
        """The next envelope or None on timeout.

        A malformed message raises BadSchema (counted in ``bad_schema``); the channel is already
        past it, so the caller answers the sender (``envelope.error_reply``) and reads on.
        """
        data = self.raw.recv(timeout)
        if data is None:
            return None
        st = self._stats
        if st is not None:
            st.incr("msgs_in")
            st.incr("bytes_in", len(data))
        try:
            return env_mod.decode(data, self._limit)
        except BadSchema:
            if st is not None:
                st.incr("bad_schema")
            raise

    def close(self) -> None:
        self.raw.close()
