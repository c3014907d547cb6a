"""Reaching the stack's buses from configuration: geometry, paths, heartbeats.

Every component and command opens its buses through here, so the segment geometry
and location come from one place (the ``[bus]`` configuration table).
"""

from __future__ import annotations

import dataclasses
import grp
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator

from runa import preflight
from runa.config import Config
from runa.errors import ConfigError, RunaError
from runa.protocol.heartbeat import Heartbeat, health_key
from runa.splinter import (
    BUSES,
    Bus,
    Envelope,
    EnvelopeReceiver,
    Geometry,
    ensure_segment,
    segment_path,
)
from runa.splinter.envelope import parse_rfc3339
from runa.splinter.errors import (
    BadSchema,
    SegmentDamaged,
    SegmentError,
    SegmentNotFound,
    SplinterError,
    TtlExpired,
)

EX_UNAVAILABLE = 69


class BusNotRunning(RunaError):
    """The stack's bus does not exist: nobody has started the keeper."""

    exit_code = EX_UNAVAILABLE


# coven and alethia carry few, small records; their pages are reserved up front like the
# main bus's, so they get a small fixed geometry instead of the main bus's.
SMALL_BUS = Geometry(slots=256, max_key=128, max_value=2048, channels=8,
                     channel_capacity=65536, subscribers=4, stats_entries=16,
                     max_envelope=16384)
# coven's requests and replies carry a whole secret (up to 64 KiB), sealed and in base64:
# a largest `set` is an envelope of 87,871 bytes, its `get` reply 87,726 (measured; the
# reply in tests/coven/test_daemon.py), so coven's envelopes and channels are larger than
# the small bus's: 1.5 MiB more of /dev/shm per stack.
COVEN_BUS = dataclasses.replace(SMALL_BUS, channel_capacity=256 * 1024,
                                max_envelope=96 * 1024)
# alethia's answers carry whole turns (a page of at most 64 KiB of JSON, and so one turn of
# at most that), sealed and in base64: about 88 KiB of envelope, so its bus has coven's
# geometry (runa.alethia.daemon.MAX_PAGE_BYTES; measured in tests/alethia/test_daemon.py).
# Unlike coven, which has one client, every chat, `runa ask` and `runa memory` keeps a reply
# queue on it for its life: 32 channels (the service queue and 31 clients at once) instead
# of 8, 8 MiB of channels reserved in /dev/shm per stack instead of 2 MiB. A killed chat's
# reply queue is freed by the keeper's reap.
ALETHIA_BUS = dataclasses.replace(COVEN_BUS, channels=32)


def geometry(config: Config, name: str = "main") -> Geometry:
    """The segment geometry of bus ``name``: the ``[bus]`` table for main, small otherwise."""
    if name == "coven":
        return COVEN_BUS
    if name == "alethia":
        return ALETHIA_BUS
    if name != "main":
        return SMALL_BUS
    return Geometry(
        slots=config["bus.slots"],
        max_key=config["bus.max_key_bytes"],
        max_value=config["bus.max_value_bytes"],
        channels=config["bus.channels"],
        channel_capacity=config["bus.channel_bytes"],
        max_envelope=config["bus.envelope_max_bytes"],
    )


def path(config: Config, stack: str, name: str = "main") -> str:
    return segment_path(stack, name, config["bus.dir"])


def mode_and_gid(config: Config) -> tuple[int, int | None]:
    """The segment file mode and group from ``bus.mode`` / ``bus.group``."""
    group = config["bus.group"]
    try:
        gid = grp.getgrnam(group).gr_gid if group else None
    except KeyError:
        raise ConfigError(config.origin("bus.group"), "bus.group", group, "no such group") \
            from None
    return int(config["bus.mode"], 8), gid


def ensure_buses(config: Config, stack: str) -> list[tuple[str, bool]]:
    """Create every bus of ``stack`` that does not exist; [(path, created)].

    An existing segment is validated and left untouched, contents included. A bus
    directory or group this machine cannot use is refused first (``runa.preflight``).
    """
    preflight.refuse(preflight.bus_findings(config))
    return [(path(config, stack, name), ensure_bus(config, stack, name)) for name in BUSES]


def ensure_bus(config: Config, stack: str, name: str) -> bool:
    """Create bus ``name`` of ``stack`` unless it exists; True if created.

    An existing segment of another geometry is replaced when nothing uses it (no key, no
    channel): the coven bus a Runa made before coven's envelopes grew, which nothing ever
    used, stays in /dev/shm until reboot. One in use is a SegmentError naming the file, as
    ``ensure_segment`` says.
    """
    where = path(config, stack, name)
    wanted = geometry(config, name)
    mode, gid = mode_and_gid(config)
    try:
        return ensure_segment(where, wanted, mode=mode, gid=gid)
    except SegmentDamaged:
        raise
    except SegmentError:
        with Bus.open(where) as old:
            if old.geometry == wanted or old.kv.counts()["live"] or old.channel_info():
                raise
        os.unlink(where)
    return ensure_segment(where, wanted, mode=mode, gid=gid)


def connect(config: Config, stack: str, name: str = "main") -> Bus:
    """Open the stack's bus ``name``; BusNotRunning with what to do when it does not exist."""
    where = path(config, stack, name)
    try:
        return Bus.open(where)
    except SegmentNotFound:
        raise BusNotRunning(
            f"the {name} bus of stack {stack} does not exist ({where}); start Runa with "
            "'systemctl --user start runa.target' or 'runa up'") from None


class HealthWriter:
    """The service heartbeat hook: writes ``<component>:health`` to the main bus.

    The key carries a TTL of three intervals, so a component that stops beating
    disappears from the bus on the keeper's next sweep (DESIGN §2, Health).
    A bus that is not there yet (the keeper is still starting) is retried next beat.
    """

    def __init__(self, config: Config, stack: str, logger: logging.Logger,
                 interval_s: float) -> None:
        self.config = config
        self.stack = stack
        self.logger = logger
        self.ttl_ms = max(1, int(interval_s * 3000))
        self._bus: Bus | None = None

    def __call__(self, health: Heartbeat) -> None:
        if self._bus is None:
            try:
                self._bus = Bus.open(path(self.config, self.stack))
            except SegmentNotFound:
                return
        try:
            self._bus.set(health_key(health.component), health.to_json(), ttl_ms=self.ttl_ms)
        except SplinterError as error:
            self.logger.warning("heartbeat not written: %s", error)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None


class RecentRequests:
    """The ids of the last ``size`` requests a service read, so a resent one is served once.

    A client whose service died resends its query with the same id (runa.client): the new
    incarnation may find both the original, still queued, and the copy.
    """

    def __init__(self, size: int = 4096) -> None:
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._size = size

    def first_time(self, request_id: str) -> bool:
        """Record ``request_id``; False if it was read before."""
        if request_id in self._ids:
            return False
        self._ids.add(request_id)
        self._order.append(request_id)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())
        return True


def expiry(request: Envelope, now: float) -> TtlExpired | None:
    """The TTL_EXPIRED fault for a request read after ``ts`` + ``ttl_ms``; None if in time."""
    if request.ttl_ms is None or not request.expired(now):
        return None
    waited = now - parse_rfc3339(request.ts)
    return TtlExpired(f"the request waited {waited:.1f} s in the queue, longer than its "
                      f"ttl_ms ({request.ttl_ms}); it was not served, ask again")


def read_requests(queue: EnvelopeReceiver, timeout: float, *,
                  on_bad_schema: Callable[[BadSchema], None],
                  on_cancel: Callable[[Envelope], None],
                  on_expired: Callable[[Envelope, TtlExpired], None],
                  seen: RecentRequests | None = None,
                  on_repeat: Callable[[Envelope], None] | None = None,
                  clock: Callable[[], float] = time.time) -> Iterator[Envelope]:
    """What a service's queue holds now (waiting up to ``timeout`` for the first).

    Cancels are handed to ``on_cancel`` as they are read, ahead of the requests queued
    before them, so a long answer can be stopped at once; a malformed envelope goes to
    ``on_bad_schema`` (to be answered if it can be) and reading goes on. A query read
    after its ``ttl_ms`` goes to ``on_expired`` (answered TTL_EXPIRED, not served), and
    one whose id ``seen`` already holds (a client's resend) is dropped, or handed to
    ``on_repeat`` (a service that never sees resends refuses it as a replay).
    """
    while True:
        try:
            envelope = queue.recv(timeout)
        except BadSchema as error:
            on_bad_schema(error)
            timeout = 0
            continue
        if envelope is None:
            return
        timeout = 0
        if envelope.type == "query":
            if seen is not None and not seen.first_time(envelope.id):
                if on_repeat is not None:
                    on_repeat(envelope)
                continue
            expired = expiry(envelope, clock())
            if expired is not None:
                on_expired(envelope, expired)
                continue
        if envelope.type == "query" and envelope.payload.get("op") == "cancel":
            on_cancel(envelope)
        else:
            yield envelope


def bus_opener(config: Config, stack: str) -> Callable[[], Bus | None]:
    """A callable that opens the stack's main bus, or gives None while the keeper has not
    created it yet (a watcher started before the keeper tries again later)."""
    def open_bus() -> Bus | None:
        try:
            return connect(config, stack)
        except BusNotRunning:
            return None

    return open_bus
