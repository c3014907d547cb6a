"""The channel fast path in C (runa.splinter._fastchan) against the pure-Python path.

Both must leave the same bytes in the segment and give the same answers, errors included; the
C path also has to keep what the Python path gets from the interpreter for free: signal
handlers run during a blocked wait, a held lock is waited for, a closed bus raises.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time

import pytest

from runa.splinter import Bus, create_segment
from runa.splinter.channel import _fastchan
from runa.splinter.errors import SplinterError

from .support import SMALL

needs_native = pytest.mark.skipif(
    _fastchan is None, reason="the C extension runa.splinter._fastchan is not built (setup.py)")
PATHS = [pytest.param(True, id="native", marks=needs_native), pytest.param(False, id="python")]


def _attempt(f, *args):
    try:
        return ("ok", f(*args))
    except SplinterError as e:
        return (type(e).__name__, str(e))


def _script(path: str, native: bool) -> list[tuple[str, object]]:
    """The same traffic on either path: wrap-arounds, a full queue, a too-large message, a
    subscriber that falls behind the ring and one that keeps up."""
    log: list[tuple[str, object]] = []
    with Bus.open(path, native=native) as bus:
        assert bus.channels.native is native
        rx, tx = bus.queue("q"), bus.sender("q")
        fast, slow, btx = bus.subscribe("b"), bus.subscribe("b"), bus.broadcast("b")
        rng = random.Random(7)
        for i in range(300):
            data = bytes([i % 256]) * rng.choice([0, 1, 7, 8, 9, 100, 500, 1024, 1025])
            log.append(_attempt(tx.send_bytes, data))
            if i % 3:
                log.append(_attempt(rx.recv_bytes, 0))
            log.append(_attempt(btx.send_bytes, data))
            log.append(_attempt(fast.recv_bytes, 0))
        log.append(_attempt(slow.recv_bytes, 0))
        while (m := rx.recv_bytes(0)) is not None:
            log.append(("drained", m))
        log.append(("channels", [(c.sent, c.received, c.dropped, c.backpressure, c.depth_bytes)
                                 for c in bus.channel_info()]))
    return log


@needs_native
def test_native_and_python_paths_write_the_same_bytes(shm_dir) -> None:
    a, b = os.path.join(shm_dir, "runa-test-a"), os.path.join(shm_dir, "runa-test-b")
    create_segment(a, SMALL)
    with Bus.open(a) as bus:  # channels exist before the copy: creation stamps the time
        bus.queue("q")
        bus.broadcast("b")
    shutil.copyfile(a, b)
    native, python = _script(a, True), _script(b, False)
    assert native == python
    kinds = {k for k, _ in native}
    assert {"ok", "Backpressure", "MessageTooLarge", "SubscriberDropped"} <= kinds
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()


@pytest.mark.parametrize("native", PATHS)
def test_signal_handler_runs_during_a_blocked_recv(make_bus, native) -> None:
    """Ctrl-C or SIGTERM must reach a service blocked in recv(); a handler that returns lets
    the wait go on."""
    bus, _ = make_bus(native=native)
    rx, tx = bus.queue("svc"), bus.sender("svc")
    calls: list[float] = []

    class Stop(Exception):
        pass

    def absorb(signum, frame) -> None:
        calls.append(time.monotonic())

    def stop(signum, frame) -> None:
        raise Stop

    old = signal.signal(signal.SIGALRM, absorb)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        sender = threading.Timer(0.4, tx.send_bytes, (b"after the signal",))
        sender.start()
        assert rx.recv_bytes() == b"after the signal"
        sender.join()
        assert len(calls) == 1
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        with pytest.raises(Stop):
            rx.recv_bytes()
        assert time.monotonic() - t0 < 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    tx.send_bytes(b"still works")
    assert rx.recv_bytes(0) == b"still works"
    assert bus.export()["channels"][0]["sent"] == 2


@pytest.mark.parametrize("native", PATHS)
def test_send_waits_for_a_channel_lock_held_by_another_thread(make_bus, native) -> None:
    bus, _ = make_bus(native=native)
    rx, tx = bus.queue("q"), bus.sender("q")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with bus.locks.hold(bus.channels.layout.channel_lock(tx.raw.index)):
            held.set()
            release.wait(5)

    th = threading.Thread(target=holder)
    th.start()
    held.wait(5)
    threading.Timer(0.3, release.set).start()
    t0 = time.monotonic()
    tx.send_bytes(b"x")
    waited = time.monotonic() - t0
    th.join()
    assert waited >= 0.25
    assert rx.recv_bytes(0) == b"x"
    assert bus.kv.counts()["lock_recoveries"] == 0


@pytest.mark.parametrize("native", PATHS)
def test_a_closed_bus_raises_instead_of_crashing(make_bus, native) -> None:
    bus, _ = make_bus(native=native)
    rx, tx = bus.queue("q"), bus.sender("q")
    bus.close()
    for call in (lambda: tx.send_bytes(b"x"), lambda: rx.recv_bytes(0),
                 lambda: rx.recv_bytes(0.05)):
        with pytest.raises(ValueError, match="released memoryview"):
            call()


@pytest.mark.parametrize("native", PATHS)
def test_recv_timeout_and_poll(make_bus, native) -> None:
    bus, _ = make_bus(native=native)
    sub, tx = bus.subscribe("ev"), bus.broadcast("ev")
    assert sub.recv_bytes(0) is None
    t0 = time.monotonic()
    assert sub.recv_bytes(0.15) is None
    assert 0.12 < time.monotonic() - t0 < 2
    tx.send_bytes(b"y")
    assert sub.recv_bytes(5) == b"y"


@needs_native
def test_ordinary_traffic_takes_the_fast_path(make_bus) -> None:
    bus, _ = make_bus()
    rx, tx = bus.queue("q"), bus.sender("q")
    assert tx.raw._fast.append(b"abc") is True
    assert rx.raw._fast.receive(0) == b"abc"
    assert rx.raw._fast.receive(0) is None
    assert bus.channel_info()[0].received == 1
