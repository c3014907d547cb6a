"""Channels: queues, broadcast, futex wake-up, backpressure, crash safety and reaping."""

from __future__ import annotations

import os
import signal
import time

import pytest

from runa.splinter import Bus, Geometry
from runa.splinter import envelope as E
from runa.splinter.channel import QueueOwner, _fastchan
from runa.splinter.errors import (
    Backpressure,
    BadSchema,
    ChannelBusy,
    ChannelError,
    ChannelNotFound,
    MessageTooLarge,
    SubscriberDropped,
)
from runa.splinter.liveness import process_start_time

from .support import SMALL

CAP = SMALL.channel_capacity


@pytest.fixture(params=[
    pytest.param(True, id="native", marks=pytest.mark.skipif(
        _fastchan is None, reason="the C extension runa.splinter._fastchan is not built")),
    pytest.param(False, id="python"),
])
def make_bus(request, make_bus):
    """Every channel test runs on the C fast path and on the pure-Python path (this process's
    bus; children open theirs with the default)."""
    def make(*args, **kwargs):
        kwargs.setdefault("native", request.param)
        return make_bus(*args, **kwargs)

    return make


def test_queue_roundtrip_fifo_and_wraparound(make_bus) -> None:
    bus, _ = make_bus()
    rx = bus.queue("svc")
    tx = bus.sender("svc")
    sent = []
    for i in range(200):  # many times the ring: records wrap around the end
        env = E.query("chat", "svc", {"i": i, "pad": "x" * (i * 7 % 300)}, reply_to="chat")
        tx.send(env)
        sent.append(env)
        if i % 3 == 2:
            for _ in range(3):
                got = rx.recv(timeout=0)
                want = sent.pop(0)
                assert got == want
    while sent:
        assert rx.recv(timeout=0) == sent.pop(0)
    assert rx.recv(timeout=0) is None
    [info] = bus.channel_info()
    assert (info.name, info.kind, info.owner_pid, info.sent, info.received) == (
        "svc", "queue", os.getpid(), 200, 200)
    assert info.depth_bytes == 0


def test_full_queue_answers_backpressure_and_keeps_unread(make_bus) -> None:
    bus, _ = make_bus()
    stats = bus.component_stats("chat")
    rx = bus.queue("svc")
    tx = bus.sender("svc", stats=stats)
    n = 0
    with pytest.raises(Backpressure) as e:
        while True:
            tx.send_bytes(b"%06d" % n + b"." * 250)
            n += 1
    assert e.value.code == 4100 and e.value.to_payload()["name"] == "BACKPRESSURE"
    assert "full" in str(e.value)
    assert n == CAP // 264  # 8-byte header + 256 padded bytes each, nothing overwritten
    assert stats.get()["backpressure"] == 1 and stats.get()["msgs_out"] == n
    assert bus.channel_info()[0].backpressure == 1
    assert rx.recv_bytes(timeout=0)[:6] == b"000000"
    tx.send_bytes(b"%06d" % n + b"." * 250)  # room again
    for i in range(1, n + 1):
        assert rx.recv_bytes(timeout=0)[:6] == b"%06d" % i


def test_channel_errors(make_bus) -> None:
    bus, _ = make_bus()
    with pytest.raises(ChannelNotFound):
        bus.sender("nobody")
    rx = bus.queue("svc")
    with pytest.raises(MessageTooLarge):
        bus.sender("svc").send_bytes(b"x" * (SMALL.max_envelope + 1))
    with pytest.raises(ChannelError, match="exists as a queue"):
        bus.subscribe("svc")
    for bad in ("", "x" * 65):
        with pytest.raises(ChannelError):
            bus.queue(bad)
    rx.close()
    with pytest.raises(ChannelNotFound):
        bus.sender("svc")


def _own_queue_then(path: str, name: str, ready_w: int, action: str,
                    service: bool = False) -> None:
    bus = Bus.open(path)
    bus.queue(name, service=service)
    bus.sender(name).send(E.event("svc", {"left": "behind"}, to=name))
    os.write(ready_w, b"r")
    if action == "sleep":
        time.sleep(60)


def test_queue_has_one_live_owner_and_is_adopted_after_death(make_bus, mp) -> None:
    bus, path = make_bus()
    r, w = os.pipe()
    child = mp.Process(target=_own_queue_then, args=(path, "svc", w, "sleep"))
    child.start()
    assert os.read(r, 1) == b"r"
    with pytest.raises(ChannelBusy, match=f"live pid {child.pid}"):
        bus.queue("svc")
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    rx = bus.queue("svc")  # the owner is dead: adopted, with its unread message
    assert rx.recv(timeout=0).payload == {"left": "behind"}
    assert bus.channel_info()[0].owner_pid == os.getpid()


def test_reap_frees_the_queue_of_a_sigkilled_owner(make_bus, mp) -> None:
    bus, path = make_bus()
    r, w = os.pipe()
    child = mp.Process(target=_own_queue_then, args=(path, "svc", w, "sleep"))
    child.start()
    assert os.read(r, 1) == b"r"
    tx = bus.sender("svc")
    assert bus.reap() == []  # owner alive: nothing to reap
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    reaped = bus.reap()
    assert [(x.channel, x.what, x.pid) for x in reaped] == [("svc", "queue", child.pid)]
    assert reaped[0].unread_bytes > 0
    assert bus.channel_info() == []
    with pytest.raises(ChannelNotFound):
        tx.send(E.event("x", {}))
    assert bus.reap() == []


def test_reap_keeps_a_service_queue_with_its_requests_for_the_next_owner(make_bus, mp) -> None:
    """A service's queue outlives its owner's death; the next incarnation answers what waited."""
    bus, path = make_bus()
    r, w = os.pipe()
    child = mp.Process(target=_own_queue_then, args=(path, "svc", w, "sleep", True))
    child.start()
    assert os.read(r, 1) == b"r"
    tx = bus.sender("svc")
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    owner = bus.queue_owner("svc")
    assert owner is not None and (owner.pid, owner.alive, owner.service) == (child.pid, False, True)
    assert bus.reap() == []  # kept: its owner is dead but the service comes back
    tx.send(E.event("client", {"sent": "while it was down"}, to="svc"))
    assert [c.name for c in bus.channel_info()] == ["svc"]
    rx = bus.queue("svc", service=True)  # the next incarnation adopts it
    assert rx.recv(timeout=0).payload == {"left": "behind"}
    assert rx.recv(timeout=0).payload == {"sent": "while it was down"}
    assert bus.queue_owner("svc") == QueueOwner(*bus.identity, True, True)
    rx.close()  # a clean stop frees it: nothing is coming back
    assert bus.channel_info() == [] and bus.queue_owner("svc") is None


def test_reap_sees_through_pid_reuse(make_bus) -> None:
    """An owner recorded with this pid but another start time is a dead process."""
    bus, path = make_bus()
    ghost = Bus.open(path, identity=(os.getpid(), process_start_time(os.getpid()) - 1))
    try:
        ghost.queue("ghost")
        assert [x.what for x in bus.reap()] == ["queue"]
    finally:
        ghost.close()


def test_sender_follows_a_restarted_owner(make_bus) -> None:
    bus, _path = make_bus()
    rx = bus.queue("svc")
    tx = bus.sender("svc")
    rx.close()
    rx2 = bus.queue("svc")  # the service came back: a new incarnation of the channel
    tx.send(E.event("chat", {"n": 1}, to="svc"))
    assert rx2.recv(timeout=0).payload == {"n": 1}


def _blocked_reader(path: str, ready_w: int, out) -> None:
    bus = Bus.open(path)
    rx = bus.queue("svc")
    os.write(ready_w, b"r")
    cpu0 = time.process_time()
    env = rx.recv(timeout=30)
    out.put((env.payload if env else None, time.process_time() - cpu0, time.monotonic()))


def _on_cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime + stime


def test_blocked_reader_uses_no_cpu_and_wakes_on_publish(make_bus, mp) -> None:
    bus, path = make_bus()
    r, w = os.pipe()
    out = mp.Queue()
    child = mp.Process(target=_blocked_reader, args=(path, w, out))
    child.start()
    assert os.read(r, 1) == b"r"
    time.sleep(0.2)  # let it reach FUTEX_WAIT
    cpu0, ticks0 = _on_cpu_ns(child.pid), _ticks(child.pid)
    time.sleep(5)
    cpu_ns, ticks = _on_cpu_ns(child.pid) - cpu0, _ticks(child.pid) - ticks0
    sent_at = time.monotonic()
    bus.sender("svc").send(E.query("chat", "svc", {"text": "wake up"}))
    payload, child_cpu, woke_at = out.get(timeout=10)
    child.join(10)
    assert payload == {"text": "wake up"}
    assert cpu_ns < 1_000_000, f"blocked reader used {cpu_ns / 1e6:.3f} ms CPU in 5 s"
    assert ticks == 0
    assert child_cpu < 0.05  # the whole recv() call, wake-up and decode included
    assert woke_at - sent_at < 1.0


def test_broadcast_lagging_subscriber_is_dropped_and_counted(make_bus) -> None:
    bus, _ = make_bus()
    fast = bus.subscribe("events")
    slow = bus.subscribe("events")
    tx = bus.broadcast("events")
    for i in range(100):  # ~8 rings' worth; the writer never blocks and never fails
        tx.send_bytes(b"%04d" % i + b"-" * 300)
        assert fast.recv_bytes(timeout=0)[:4] == b"%04d" % i
    with pytest.raises(SubscriberDropped, match="resubscribe"):
        slow.recv_bytes(timeout=0)
    [info] = bus.channel_info()
    assert info.dropped == 1 and len(info.subscribers) == 1
    with pytest.raises(SubscriberDropped):
        slow.recv_bytes(timeout=0)
    slow.raw.resubscribe()
    tx.send_bytes(b"after")
    assert slow.recv_bytes(timeout=0) == b"after"
    assert fast.recv_bytes(timeout=0) == b"after"
    assert bus.channel_info()[0].dropped == 1


def _stopped_subscriber(path: str, ready_w: int, out) -> None:
    bus = Bus.open(path)
    sub = bus.subscribe("events")
    os.write(ready_w, b"r")
    os.kill(os.getpid(), signal.SIGSTOP)  # a subscriber that stops reading
    try:
        sub.recv_bytes(timeout=1)
        out.put("not dropped")
    except SubscriberDropped as e:
        out.put(f"dropped: {e}")


def wait_stopped(pid: int, timeout: float = 10) -> None:
    """Wait until ``pid`` is in the stopped state (``T`` in /proc/<pid>/stat)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.001)
    raise AssertionError(f"pid {pid} did not stop within {timeout} s")


def test_writer_never_blocks_on_a_stopped_subscriber_in_another_process(make_bus, mp) -> None:
    bus, path = make_bus()
    tx = bus.broadcast("events")
    r, w = os.pipe()
    out = mp.Queue()
    child = mp.Process(target=_stopped_subscriber, args=(path, w, out))
    child.start()
    assert os.read(r, 1) == b"r"
    wait_stopped(child.pid)  # else a SIGCONT sent before its SIGSTOP would leave it stopped
    worst = 0.0
    for i in range(200):
        t = time.monotonic()
        tx.send(E.event("keeper", {"op": "promote", "key": f"k{i}", "pad": "x" * 200}))
        worst = max(worst, time.monotonic() - t)
    assert worst < 0.1
    os.kill(child.pid, signal.SIGCONT)
    assert out.get(timeout=10).startswith("dropped")
    child.join(10)
    assert bus.channel_info()[0].dropped == 1


def test_reap_drops_dead_and_lagging_subscribers(make_bus, mp) -> None:
    bus, path = make_bus()
    r, w = os.pipe()
    out = mp.Queue()
    child = mp.Process(target=_stopped_subscriber, args=(path, w, out))
    child.start()
    assert os.read(r, 1) == b"r"
    lagging = bus.subscribe("events")
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    tx = bus.broadcast("events")
    for _ in range(30):
        tx.send_bytes(b"z" * 300)
    reaped = sorted((x.what, x.pid) for x in bus.reap())
    assert reaped == [("lagging-subscriber", os.getpid()), ("subscriber", child.pid)]
    assert bus.channel_info()[0].dropped == 1
    with pytest.raises(SubscriberDropped):
        lagging.recv_bytes(timeout=0)


def _parked_sender(path: str, name: str, ready_w: int) -> None:
    def park() -> None:
        os.write(ready_w, b"p")
        time.sleep(60)

    bus = Bus.open(path, write_hook=park)
    bus.sender(name).send_bytes(b"PARTIAL" * 40)


@pytest.mark.parametrize("kind", ["queue", "broadcast"])
def test_sender_killed_mid_append_leaves_nothing_and_channel_works(make_bus, mp, kind) -> None:
    bus, path = make_bus()
    rx = bus.queue("ch") if kind == "queue" else bus.subscribe("ch")
    tx = bus.sender("ch")
    tx.send_bytes(b"before")
    r, w = os.pipe()
    child = mp.Process(target=_parked_sender, args=(path, "ch", w))
    child.start()
    assert os.read(r, 1) == b"p"  # half the record written, channel lock held
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert rx.recv_bytes(timeout=0) == b"before"
    assert rx.recv_bytes(timeout=0) is None  # no partial message
    t0 = time.monotonic()
    tx.send_bytes(b"after")  # the kernel marked the dead sender's lock OWNER_DIED
    assert time.monotonic() - t0 < 1.0
    assert bus.kv.counts()["lock_recoveries"] == 1
    assert rx.recv_bytes(timeout=0) == b"after"
    assert rx.recv_bytes(timeout=0) is None


def _server(path: str, ready_w: int) -> None:
    """A minimal service loop: answers queries, answers BAD_SCHEMA to garbage, keeps running."""
    bus = Bus.open(path)
    stats = bus.component_stats("svc")
    rx = bus.queue("svc", stats=stats)
    os.write(ready_w, b"r")
    served = 0
    while served < 3:
        try:
            req = rx.recv(timeout=10)
        except BadSchema as e:
            if e.reply_to:
                bus.sender(e.reply_to, stats=stats).send(E.error_reply(None, e, sender="svc"))
            served += 1
            continue
        if req is None:
            return
        bus.sender(req.reply_to, stats=stats).send(E.response(req, "svc", {"echo": req.payload}))
        served += 1


def test_malformed_envelope_gets_bad_schema_and_reader_keeps_running(make_bus, mp) -> None:
    bus, path = make_bus()
    replies = bus.queue("chat")
    r, w = os.pipe()
    child = mp.Process(target=_server, args=(path, w))
    child.start()
    assert os.read(r, 1) == b"r"
    tx = bus.sender("svc")
    tx.send_bytes(b'{"id": "abc", "reply_to": "chat", "type": "query", "payload": [}')
    tx.send_bytes(b'{"id":"def","ts":"2026-01-01T00:00:00Z","from":"chat","to":"svc",'
                  b'"type":"bogus","payload":{},"reply_to":"chat"}')
    good = E.query("chat", "svc", {"q": 1}, reply_to="chat")
    tx.send(good)
    a, b, c = (replies.recv(timeout=10) for _ in range(3))
    child.join(10)
    assert child.exitcode == 0
    assert (a.type, a.id, a.to, a.payload["code"], a.payload["name"]) == (
        "error", "abc", "chat", 1000, "BAD_SCHEMA")
    assert b.payload["code"] == 3000 and b.payload["name"] == "UNKNOWN_TYPE" and b.id == "def"
    assert (c.type, c.id, c.payload) == ("response", good.id, {"echo": {"q": 1}})
    st = bus.stats.snapshot()["svc"]
    assert st["bad_schema"] == 2 and st["msgs_in"] == 3 and st["msgs_out"] == 3
    assert st["faults_out"] == 2


def test_queue_wait_times_out(make_bus) -> None:
    bus, _ = make_bus()
    rx = bus.queue("svc")
    t = time.monotonic()
    assert rx.recv(timeout=0.2) is None
    assert 0.15 < time.monotonic() - t < 2


def test_geometry_limits_channel_and_subscriber_tables(make_bus) -> None:
    g = Geometry(slots=8, channels=2, channel_capacity=4096, subscribers=1, max_envelope=1024)
    bus, _ = make_bus(g)
    bus.queue("a")
    bus.subscribe("b")
    with pytest.raises(ChannelError, match="all 2 channels"):
        bus.queue("c")
    with pytest.raises(ChannelError, match="subscriber entries"):
        bus.subscribe("b")
