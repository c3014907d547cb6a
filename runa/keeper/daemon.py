"""The keeper daemon: the one process that owns the life cycle of the stack's buses.

It creates the segments at start (never truncating live ones, so bus contents survive
its restarts), sweeps for channels and subscribers whose owner died, runs decay (TTL and
idle expiry, ``promote`` events for keys read often) on a fixed schedule, and keeps its
counters in each segment's header. Everyone else only opens what it created.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from runa import bus as bus_mod
from runa import log
from runa.config import Config
from runa.keeper.decay import Decayer, DecayPolicy, EventPublisher
from runa.service import ServiceContext
from runa.splinter import BUSES, Bus


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
        self._ctx: ServiceContext | None = None
        self._next_reap = 0.0
        self._next_decay = 0.0

    @property
    def bus(self) -> Bus | None:
        """The main bus (None before start and after stop)."""
        return self.buses.get("main")

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        for where, created in bus_mod.ensure_buses(self.config, self.stack):
            if created:
                log.event(self.logger, "bus_created", f"created bus {where}", bus=where)
            else:
                self.logger.info("bus %s exists; keeping its contents", where)
        for name in BUSES:
            bus = Bus.open(bus_mod.path(self.config, self.stack, name), clock=self.clock_ns)
            self.buses[name] = bus
            events = None
            if name == "main":  # promote events only from the main bus (see keeper.decay)
                events = EventPublisher(bus, self.name, bus.component_stats(self.name))
            self.decayers[name] = Decayer(bus, self.policy, bus_name=name, events=events,
                                          clock_ns=self.clock_ns)
        ctx.status(f"serving stack {self.stack}")

    def step(self, timeout: float) -> None:
        assert self._ctx is not None and self.buses
        now = self.clock()
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
        for bus in self.buses.values():
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
        for name, decayer in self.decayers.items():
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
