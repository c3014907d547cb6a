"""The service base every Runa daemon runs on.

It speaks the sd_notify protocol (to systemd, or to gilgul's own supervisor, which
provides ``NOTIFY_SOCKET`` the same way): ``READY=1`` only once the daemon can
serve, ``STATUS=`` as it goes, ``EXTEND_TIMEOUT_USEC=`` during a long start-up,
``WATCHDOG=1`` from the real work loop, ``STOPPING=1`` on a clean SIGTERM.

A daemon is a plain object with ``start``/``step``/``stop``; the runner owns the
loop. Every ``step`` is bounded by half the watchdog interval, so a hung loop misses
pings and a busy one does not. The bus heartbeat (``<component>:health``) plugs in
as a hook called from the same loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from runa import log
from runa.errors import RunaError
from runa.protocol.heartbeat import Heartbeat


class Notifier(Protocol):
    """Sends one sd_notify datagram; the seam tests replace."""

    def notify(self, state: str) -> None: ...


class SdNotifier:
    """sd_notify through systemd-python; a no-op where ``NOTIFY_SOCKET`` is unset."""

    def notify(self, state: str) -> None:
        from systemd import daemon

        daemon.notify(state)


HeartbeatHook = Callable[[Heartbeat], None]


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """The watchdog interval in seconds systemd asked this process for, if any.

    Mirrors sd_watchdog_enabled(3): ``WATCHDOG_USEC`` applies only when
    ``WATCHDOG_PID`` is unset or names this process.
    """
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


class Daemon(Protocol):
    """What the runner drives. ``step`` must return within ``timeout`` seconds."""

    name: str

    def start(self, ctx: ServiceContext) -> None: ...

    def step(self, timeout: float) -> None: ...

    def stop(self) -> None: ...


class StopFlag:
    """A one-way "please stop" flag that a signal handler may set.

    ``threading.Event.set()`` takes the lock ``Event.wait()`` holds for a moment, and a
    signal handler runs in the main thread, possibly inside that moment: the process then
    waits on itself forever (seen as a daemon that ignores SIGTERM). Here ``set()`` only
    stores a bool and writes a byte to a pipe, and ``wait()`` sleeps in ``select`` on it.
    """

    def __init__(self) -> None:
        self._set = False
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(BlockingIOError):  # full of earlier wake-ups: one is enough
            os.write(self._write_fd, b"\0")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or ``timeout`` seconds pass; true if set."""
        if not self._set:
            select.select([self._read_fd], [], [], timeout)
        return self._set

    def __del__(self) -> None:
        for fd in (getattr(self, "_read_fd", None), getattr(self, "_write_fd", None)):
            if fd is not None:
                os.close(fd)


@dataclass
class ServiceContext:
    """What a daemon may tell the service manager while it runs.

    ``keepalive()`` is the one liveness call: it pings the watchdog and writes the
    heartbeat when each is due. The runner calls it between steps; a daemon doing
    long work (a model decode) calls it from inside that work.
    """

    notifier: Notifier
    clock: Callable[[], float]
    """Monotonic seconds, the seam every component's clock is (``time.monotonic``)."""
    logger: logging.Logger
    watchdog_s: float | None
    component: str = ""
    incarnation: int = 0
    heartbeat: HeartbeatHook | None = None
    heartbeat_interval: float = 1.0
    stopping: StopFlag = field(default_factory=StopFlag)
    stop_signal: int | None = None
    status_text: str = "starting"
    _last_ping: float = float("-inf")
    _next_beat: float = float("-inf")

    def status(self, text: str) -> None:
        """Publish a one-line status (``systemctl status`` shows it)."""
        self.status_text = text
        self.notifier.notify(f"STATUS={text}")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more start-up (or stop) time, e.g. while a model loads."""
        self.notifier.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def keepalive(self) -> None:
        """Ping the watchdog and write the heartbeat when due; cheap enough to call per token."""
        now = self.clock()
        if self.watchdog_s is not None and now - self._last_ping >= self.watchdog_s / 2:
            self._last_ping = now
            self.notifier.notify("WATCHDOG=1")
        if self.heartbeat is not None and now >= self._next_beat:
            self._next_beat = now + self.heartbeat_interval
            self.heartbeat(Heartbeat(self.component, os.getpid(), self.incarnation,
                                     time.monotonic_ns(), self.status_text))

    @property
    def wait_bound(self) -> float:
        """The longest a daemon may block before returning to the loop."""
        bound = self.watchdog_s / 2 if self.watchdog_s else 1.0
        if self.heartbeat is not None:
            bound = min(bound, max(0.0, self._next_beat - self.clock()))
        return bound


class ServiceRunner:
    """Runs one daemon: start, READY, the bounded work loop, and a clean stop."""

    def __init__(
        self,
        daemon: Daemon,
        logger: logging.Logger,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        env: Mapping[str, str] | None = None,
        heartbeat: HeartbeatHook | None = None,
        heartbeat_interval: float = 1.0,
    ) -> None:
        env = os.environ if env is None else env
        self.daemon = daemon
        self.logger = logger
        self.incarnation = int(env.get("RUNA_INCARNATION", "0") or 0)
        self.ctx = ServiceContext(
            notifier=notifier or SdNotifier(),
            clock=clock,
            logger=logger,
            watchdog_s=watchdog_interval(env, os.getpid()),
            component=daemon.name,
            incarnation=self.incarnation,
            heartbeat=heartbeat,
            heartbeat_interval=heartbeat_interval,
        )

    def request_stop(self, signum: int | None = None, _frame: object = None) -> None:
        """Ask the loop to finish its current step and stop (the SIGTERM handler).

        A signal handler must not log or take locks (the main thread it interrupts may
        hold them): the loop logs the signal when it sees the flag.
        """
        if signum is not None and self.ctx.stop_signal is None:
            self.ctx.stop_signal = signum
        self.ctx.stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> int:
        """Run until stopped; the return value is the process exit status."""
        ctx = self.ctx
        name = self.daemon.name
        log.event(self.logger, "starting", f"{name} starting", incarnation=self.incarnation)
        try:
            self.daemon.start(ctx)
        except RunaError as error:
            ctx.status(f"failed: {error}")
            log.event(self.logger, "start_failed", f"{name} could not start: {error}",
                      level=logging.ERROR)
            return error.exit_code
        if ctx.stopping.is_set():
            self.daemon.stop()
            return 0
        ctx.notifier.notify("READY=1")
        ctx.status("ready" if ctx.status_text == "starting" else ctx.status_text)
        log.event(self.logger, "ready", f"{name} ready", incarnation=self.incarnation)
        try:
            self._loop()
        except Exception as error:  # a crash must reach the journal before the process dies
            self.logger.exception("%s crashed: %s", name, error,
                                  extra={"RUNA_EVENT": "crashed"})
            return 70  # EX_SOFTWARE
        if ctx.stop_signal is not None:
            self.logger.info("received %s, stopping", signal.Signals(ctx.stop_signal).name)
        ctx.notifier.notify("STOPPING=1")
        ctx.status("stopping")
        self.daemon.stop()
        log.event(self.logger, "stopped", f"{name} stopped cleanly",
                  incarnation=self.incarnation)
        return 0

    def _loop(self) -> None:
        ctx = self.ctx
        while not ctx.stopping.is_set():
            ctx.keepalive()
            self.daemon.step(ctx.wait_bound)
