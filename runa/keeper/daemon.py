"""The keeper daemon: the one process that owns the life cycle of the stack's buses.

It creates the segments at start (never truncating live ones, so bus contents survive
its restarts), sweeps for channels and subscribers whose owner died, and keeps its own
counters in the stats table. Everyone else only opens what it created.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from runa import bus as bus_mod
from runa import log
from runa.config import Config
from runa.service import ServiceContext
from runa.splinter import Bus


class Keeper:
    name = "splinter"

    def __init__(self, config: Config, stack: str, logger: logging.Logger,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.stack = stack
        self.logger = logger
        self.clock = clock
        self.reap_interval = config["splinter.reap_interval_s"]
        self.bus: Bus | None = None
        self._ctx: ServiceContext | None = None
        self._next_reap = 0.0

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        for where, created in bus_mod.ensure_buses(self.config, self.stack):
            if created:
                log.event(self.logger, "bus_created", f"created bus {where}", bus=where)
            else:
                self.logger.info("bus %s exists; keeping its contents", where)
        self.bus = Bus.open(bus_mod.path(self.config, self.stack))
        ctx.status(f"serving stack {self.stack}")

    def step(self, timeout: float) -> None:
        assert self._ctx is not None and self.bus is not None
        now = self.clock()
        if now >= self._next_reap:
            self.sweep()
            self._next_reap = now + self.reap_interval
        wait = min(timeout, max(0.0, self._next_reap - self.clock()))
        self._ctx.stopping.wait(wait)

    def sweep(self) -> None:
        """Free what dead processes left behind."""
        assert self.bus is not None
        for reaped in self.bus.reap():
            log.event(self.logger, "reaped",
                      f"reaped {reaped.what} {reaped.channel!r} of dead pid {reaped.pid}",
                      channel=reaped.channel, what=reaped.what, owner_pid=reaped.pid,
                      unread_bytes=reaped.unread_bytes)

    def stop(self) -> None:
        if self.bus is not None:
            self.bus.close()
            self.bus = None


def create(config: Config, logger: logging.Logger, stack: str) -> Keeper:
    return Keeper(config, stack, logger)
