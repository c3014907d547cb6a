"""The keeper daemon: the one process that owns the life cycle of the stack's buses.

It creates the segments at start (never truncating live ones, so bus contents survive
its restarts), sweeps for channels and subscribers whose owner died, runs decay (TTL and
idle expiry, ``promote`` events for keys read often) on a fixed schedule, and keeps its
counters in each segment's header. Everyone else only opens what it created. A segment file
found damaged (cut short under its mapping, overwritten) is set aside and reported, not
touched: the other buses are still served, and removing the file gets a fresh one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from runa import log, preflight
from runa import stackbus as bus_mod
from runa.config import Config
from runa.keeper.decay import Decayer, DecayPolicy, EventPublisher
from runa.service import ServiceContext
from runa.splinter import BUSES, Bus
from runa.splinter.errors import SegmentDamaged


class Keeper:
    name = "splinter"

    def __init__(self, config: Config, stack: str, logger: logging.Logger,
                 clock: Callable[[], float] = time.monotonic,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.config = config
        self.stack = stack
        self.logger = logger
        self.clock = clock
        self.clock_ns = clock_ns
        self.reap_interval = config["splinter.reap_interval_s"]
        self.decay_interval = config["splinter.decay_interval_s"]
        self.policy = DecayPolicy.from_config(config)
        self.buses: dict[str, Bus] = {}
        self.decayers: dict[str, Decayer] = {}
        self.damaged: dict[str, str] = {}  # bus name: what is wrong with its segment file
        self._ctx: ServiceContext | None = None
        self._next_reap = 0.0
        self._next_decay = 0.0

    @property
    def bus(self) -> Bus | None:
        """The main bus (None before start and after stop)."""
        return self.buses.get("main")

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._preflight()
        for name in BUSES:
            self._open(name)
        self._publish_status()

    def _preflight(self) -> None:
        """Refuse what ``runa config check`` calls fatal about the buses; log its warnings.

        A ``bus.dir`` or ``bus.group`` this machine cannot use is the ConfigError (exit 78)
        the check prints, not a traceback from the first segment created there.
        """
        findings = preflight.bus_findings(self.config)
        preflight.refuse(findings)
        for finding in findings:
            log.event(self.logger, "config_warning", str(finding.error),
                      level=logging.WARNING)

    def _publish_status(self) -> None:
        """The one-line status (systemctl, the heartbeat): names any bus set aside."""
        if self._ctx is None:
            return
        status = f"serving stack {self.stack}"
        if self.damaged:
            status += f"; damaged, not served: {', '.join(sorted(self.damaged))}"
        self._ctx.status(status)

    def _open(self, name: str) -> None:
        """Create bus ``name`` unless it exists, open it and sweep it from now on.

        A file there that is not a usable segment is set aside (see ``_set_aside``) instead of
        stopping the keeper: the other buses are served meanwhile.
        """
        where = bus_mod.path(self.config, self.stack, name)
        try:
            created = bus_mod.ensure_bus(self.config, self.stack, name)
            bus = Bus.open(where, clock=self.clock_ns)
        except SegmentDamaged as error:
            self._set_aside(name, error)
            return
        if self.damaged.pop(name, None) is not None:
            log.event(self.logger, "bus_recreated",
                      f"bus {name}: the damaged segment was removed; re-created {where}",
                      level=logging.WARNING, bus=where)
            self._publish_status()
        elif created:
            log.event(self.logger, "bus_created", f"created bus {where}", bus=where)
        else:
            self.logger.info("bus %s exists; keeping its contents", where)
        self.buses[name] = bus
        events = None
        if name == "main":  # promote events only from the main bus (see keeper.decay)
            events = EventPublisher(bus, self.name, bus.component_stats(self.name))
        self.decayers[name] = Decayer(bus, self.policy, bus_name=name, events=events,
                                      clock_ns=self.clock_ns)

    def _set_aside(self, name: str, error: SegmentDamaged) -> None:
        """Stop using a damaged bus; say once which file and what to do about it."""
        bus = self.buses.pop(name, None)
        self.decayers.pop(name, None)
        if bus is not None:
            bus.close()  # unmapping a cut-short file is safe; touching it is not
        if self.damaged.get(name) != str(error):
            log.event(self.logger, "bus_damaged",
                      f"bus {name} is damaged and no longer served: {error}. Its contents "
                      f"cannot be trusted; remove it (rm {error.path}) and the keeper creates "
                      "a fresh one; the other buses are served meanwhile",
                      level=logging.ERROR, bus=error.path)
        newly = name not in self.damaged
        self.damaged[name] = str(error)
        if newly:
            self._publish_status()

    def _intact(self, name: str) -> bool:
        """Whether bus ``name`` is open and its file still as long as its mapping.

        Checked right before each pass over the bus: a file cut short under the mapping would
        make that pass die of SIGBUS, so it is set aside instead.
        """
        bus = self.buses.get(name)
        if bus is None:
            return False
        try:
            bus.segment.check_size()
        except SegmentDamaged as error:
            self._set_aside(name, error)
            return False
        return True

    def reopen_damaged(self) -> None:
        """Open again (creating it afresh) each bus set aside whose damaged file was removed."""
        for name in list(self.damaged):
            self._open(name)

    def step(self, timeout: float) -> None:
        assert self._ctx is not None
        now = self.clock()
        if now >= min(self._next_reap, self._next_decay):
            self.reopen_damaged()
        if now >= self._next_reap:
            self.sweep()
            self._next_reap = now + self.reap_interval
        if now >= self._next_decay:
            self.decay()
            self._next_decay = now + self.decay_interval
        due = min(self._next_reap, self._next_decay)
        self._ctx.stopping.wait(min(timeout, max(0.0, due - self.clock())))

    def sweep(self) -> None:
        """Free what dead processes left behind, on every bus."""
        for name, bus in list(self.buses.items()):
            if not self._intact(name):
                continue
            reaped_all = bus.reap()
            if reaped_all:
                bus.keeper_counters.incr("reaped", len(reaped_all))
            for reaped in reaped_all:
                log.event(self.logger, "reaped",
                          f"reaped {reaped.what} {reaped.channel!r} of dead pid {reaped.pid}",
                          channel=reaped.channel, what=reaped.what, owner_pid=reaped.pid,
                          unread_bytes=reaped.unread_bytes)

    def decay(self) -> None:
        """One decay sweep of every bus (docs/protocol.md, Decay)."""
        for name, decayer in list(self.decayers.items()):
            if not self._intact(name):
                continue
            report = decayer.sweep()
            if report.expired or report.idle_expired or report.promoted:
                self.logger.debug("bus %s: %d expired, %d idle-expired, %d promoted in %.2f ms",
                                  name, report.expired, report.idle_expired,
                                  len(report.promoted), report.duration_ns / 1e6)
            for problem in report.errors:
                self.logger.warning("bus %s: %s", name, problem)
            if report.repaired:
                fixes = [f"{what} {was} -> {now}"
                         for what, (was, now) in report.repaired.counters.items()]
                if report.repaired.scrubbed:
                    fixes.append(f"{report.repaired.scrubbed} leftover slot(s) scrubbed")
                log.event(self.logger, "store_repaired",
                          f"bus {name}: store repaired: {', '.join(fixes)}",
                          level=logging.WARNING, bus=name)

    def stop(self) -> None:
        for bus in self.buses.values():
            bus.close()
        self.buses.clear()
        self.decayers.clear()


def create(config: Config, logger: logging.Logger, stack: str) -> Keeper:
    return Keeper(config, stack, logger)
