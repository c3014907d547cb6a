"""The demo daemon: pretends to load, then ticks until it is stopped.

It exists so the service base can be exercised end to end (READY after a slow
start, watchdog pings from the loop, clean SIGTERM) before real components do.
"""

from __future__ import annotations

import logging

from runa.config import Config
from runa.service import ServiceContext


class DemoDaemon:
    name = "demo"

    def __init__(self, logger: logging.Logger, startup_delay_s: float, tick_s: float) -> None:
        self.logger = logger
        self.startup_delay_s = startup_delay_s
        self.tick_s = tick_s
        self.ticks = 0
        self._ctx: ServiceContext | None = None
        self._since_tick = 0.0

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        remaining = self.startup_delay_s
        if remaining:
            ctx.status(f"loading ({remaining:.1f} s)")
        while remaining > 0 and not ctx.stopping.is_set():
            chunk = min(remaining, 0.5)
            ctx.extend_timeout(chunk + 5.0)
            ctx.keepalive()
            ctx.stopping.wait(chunk)
            remaining -= chunk
        ctx.status("ticking")

    def step(self, timeout: float) -> None:
        assert self._ctx is not None
        wait = min(timeout, self.tick_s - self._since_tick)
        start = self._ctx.clock.monotonic()
        self._ctx.stopping.wait(max(wait, 0.0))
        self._since_tick += self._ctx.clock.monotonic() - start
        if self._since_tick >= self.tick_s:
            self._since_tick = 0.0
            self.ticks += 1
            self._ctx.status(f"ticking ({self.ticks} ticks)")

    def stop(self) -> None:
        self.logger.info("demo stopping after %d ticks", self.ticks)


def create(config: Config, logger: logging.Logger, stack: str) -> DemoDaemon:
    return DemoDaemon(logger, config["demo.startup_delay_s"], config["demo.tick_s"])
