"""The service base as a plain object: notifications, bounded waits, clean stop, heartbeats."""

from __future__ import annotations

import logging
import signal
import time

import pytest

from runa.errors import RunaError
from runa.protocol.heartbeat import Heartbeat
from runa.service import ServiceContext, ServiceRunner, watchdog_interval
from runa.testing import FakeClock


class RecordingNotifier:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, state: str) -> None:
        self.sent.append(state)


class ScriptedDaemon:
    """Advances the fake clock by each timeout it is given; stops itself after N steps."""

    name = "scripted"

    def __init__(self, clock: FakeClock, steps: int, start_error: Exception | None = None):
        self.clock = clock
        self.steps = steps
        self.start_error = start_error
        self.timeouts: list[float] = []
        self.stopped = False
        self.ctx: ServiceContext | None = None

    def start(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        if self.start_error:
            raise self.start_error
        ctx.extend_timeout(30)
        ctx.status("loaded")

    def step(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        self.clock.advance(timeout)
        if len(self.timeouts) >= self.steps:
            assert self.ctx is not None
            self.ctx.stopping.set()

    def stop(self) -> None:
        self.stopped = True


def make(steps: int = 5, env: dict[str, str] | None = None, **kwargs: object):
    clock, notifier = FakeClock(100.0), RecordingNotifier()
    daemon = ScriptedDaemon(clock, steps, **kwargs)  # type: ignore[arg-type]
    beats: list[Heartbeat] = []
    runner = ServiceRunner(daemon, logging.getLogger("runa.test"), notifier=notifier,
                           clock=clock, env=env or {}, heartbeat=beats.append,
                           heartbeat_interval=1.0)
    return runner, daemon, notifier, beats


def test_ready_comes_after_start_and_stopping_before_exit() -> None:
    runner, daemon, notifier, _ = make(env={"WATCHDOG_USEC": "4000000"})
    assert runner.run() == 0
    sent = notifier.sent
    assert sent.index("EXTEND_TIMEOUT_USEC=30000000") < sent.index("READY=1")
    assert sent.index("STATUS=loaded") < sent.index("READY=1") < sent.index("STOPPING=1")
    assert daemon.stopped


def test_every_wait_is_bounded_by_half_the_watchdog_and_pings_keep_pace() -> None:
    runner, daemon, notifier, _ = make(steps=40, env={"WATCHDOG_USEC": "1000000"})
    runner.run()
    assert max(daemon.timeouts) <= 0.5
    # 40 steps over >= 10 s of fake time: a ping at least every half interval.
    pings = notifier.sent.count("WATCHDOG=1")
    assert pings >= (daemon.clock.now() - 100.0) / 0.5 - 1


def test_heartbeats_come_from_the_loop_once_per_interval() -> None:
    runner, daemon, _, beats = make(steps=12, env={})
    runner.run()
    assert len(beats) == pytest.approx(daemon.clock.now() - 100.0, abs=1.01)
    assert beats[0].component == "scripted" and beats[0].status == "loaded"


def test_a_start_failure_never_reports_ready() -> None:
    class ModelMissing(RunaError):
        exit_code = 66

    runner, _daemon, notifier, _ = make(start_error=ModelMissing("no model at /x.gguf"))
    assert runner.run() == 66
    assert "READY=1" not in notifier.sent
    assert "STATUS=failed: no model at /x.gguf" in notifier.sent


def test_sigterm_handler_stops_the_loop() -> None:
    runner, daemon, _, _ = make(steps=10**9)
    daemon.steps = 10**9
    original = daemon.step

    def step(timeout: float) -> None:
        original(timeout)
        if len(daemon.timeouts) == 3:
            runner.request_stop(signal.SIGTERM)

    daemon.step = step  # type: ignore[method-assign]
    assert runner.run() == 0
    assert len(daemon.timeouts) == 3 and daemon.stopped


def test_a_real_sigterm_during_a_wait_wakes_it_at_once_and_is_logged_by_the_loop(caplog) -> None:
    """The handler only sets the flag (an Event's set() could deadlock on the lock its
    interrupted wait holds); the loop notices and logs the signal."""
    runner, _daemon, _, _ = make(steps=10**9)
    previous = signal.signal(signal.SIGALRM, lambda *_: runner.request_stop(signal.SIGTERM))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        started = time.monotonic()
        assert runner.ctx.stopping.wait(10)
        assert time.monotonic() - started < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    runner, daemon, _, _ = make(steps=10**9)
    previous = signal.signal(signal.SIGALRM, lambda *_: runner.request_stop(signal.SIGTERM))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with caplog.at_level(logging.INFO):
            assert runner.run() == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert daemon.stopped and "received SIGTERM, stopping" in caplog.text


@pytest.mark.parametrize(
    ("env", "pid", "expected"),
    [
        ({}, 5, None),
        ({"WATCHDOG_USEC": "2000000"}, 5, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "5"}, 5, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "6"}, 5, None),
        ({"WATCHDOG_USEC": "junk"}, 5, None),
    ],
)
def test_watchdog_interval_follows_sd_watchdog_enabled(env, pid, expected) -> None:
    assert watchdog_interval(env, pid) == expected


def test_long_work_that_calls_keepalive_still_pings_and_heartbeats() -> None:
    """A decode that takes 10 s of (fake) time inside one step is not mistaken for a hang."""
    runner, daemon, notifier, beats = make(steps=1, env={"WATCHDOG_USEC": "2000000"})

    def long_step(timeout: float) -> None:
        assert daemon.ctx is not None
        for _ in range(100):  # 100 tokens, 0.1 s each
            daemon.clock.advance(0.1)
            daemon.ctx.keepalive()
        daemon.ctx.stopping.set()

    daemon.step = long_step  # type: ignore[method-assign]
    runner.run()
    assert notifier.sent.count("WATCHDOG=1") >= 10  # at least every half interval (1 s)
    assert len(beats) >= 10  # one per heartbeat interval (1 s)
