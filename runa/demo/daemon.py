"""The demo daemon: pretends to load, then ticks until it is stopped.

It exists so the service base can be exercised end to end (READY after a slow
start, watchdog pings from the loop, clean SIGTERM) before real components do, and as
gilgul's test subject: ``demo.heartbeat_stop_after_s`` makes it stop writing
``demo:health`` while its loop (and the watchdog) stays alive.
"""

from __future__ import annotations

import logging

from runa.config import Config
from runa.service import ServiceContext


class DemoDaemon:
    name = "demo"

    def __init__(self, logger: logging.Logger, startup_delay_s: float, tick_s: float,
                 heartbeat_stop_after_s: float = 0.0) -> None:
        self.logger = logger
        self.startup_delay_s = startup_delay_s
        self.tick_s = tick_s
        self.heartbeat_stop_after_s = heartbeat_stop_after_s
        self._ready_at = 0.0
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
        self._ready_at = ctx.clock()

    def step(self, timeout: float) -> None:
        assert self._ctx is not None
        wait = min(timeout, self.tick_s - self._since_tick)
        start = self._ctx.clock()
        self._ctx.stopping.wait(max(wait, 0.0))
        self._since_tick += self._ctx.clock() - start
        self._maybe_stop_heartbeat()
        if self._since_tick >= self.tick_s:
            self._since_tick = 0.0
            self.ticks += 1
            self._ctx.status(f"ticking ({self.ticks} ticks)")

    def _maybe_stop_heartbeat(self) -> None:
        ctx = self._ctx
        assert ctx is not None
        if (self.heartbeat_stop_after_s and ctx.heartbeat is not None
                and ctx.clock() - self._ready_at >= self.heartbeat_stop_after_s):
            ctx.heartbeat = None
            self.logger.warning("heartbeat stopped on purpose (demo.heartbeat_stop_after_s)",
                                extra={"RUNA_EVENT": "heartbeat_stopped"})

    def stop(self) -> None:
        self.logger.info("demo stopping after %d ticks", self.ticks)


def create(config: Config, logger: logging.Logger, stack: str) -> DemoDaemon:
    return DemoDaemon(logger, config["demo.startup_delay_s"], config["demo.tick_s"],
                      config["demo.heartbeat_stop_after_s"])
