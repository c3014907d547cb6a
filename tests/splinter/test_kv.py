"""KV semantics: get/set/unset/list, tombstones, limits, TTL/decay fields, cross-process reads."""

from __future__ import annotations

import os
import zlib

import pytest

from runa.splinter import Bus, Geometry
from runa.splinter.errors import InvalidKey, InvalidTtl, StoreFull, ValueTooLarge
from runa.splinter.kv import MAX_KEY_TTL_MS
from runa.testing import FakeClock

from .support import SMALL


def test_set_get_update_unset_list(make_bus) -> None:
    bus, _ = make_bus()
    kv = bus.kv
    assert kv.get("a") is None
    kv.set("a", b"1")
    kv.set("b", "zwei")  # str values are stored as UTF-8
    kv.set("empty", b"")
    assert kv.get("a") == b"1" and kv.get("b") == b"zwei" and kv.get("empty") == b""
    kv.set("a", b"one")
    assert kv.get("a") == b"one"
    assert sorted(kv.list()) == ["a", "b", "empty"]
    assert kv.list("e") == ["empty"]
    assert kv.unset("a") is True
    assert kv.unset("a") is False
    assert kv.get("a") is None
    assert kv.counts()["live"] == 2


def _colliding_keys(slots: int, n: int) -> list[str]:
    """n keys whose crc32 lands on the same home slot, so they share one probe chain."""
    out, i = [], 0
    while len(out) < n:
        k = f"c{i}"
        if zlib.crc32(k.encode()) % slots == 0:
            out.append(k)
        i += 1
    return out


def test_update_after_delete_never_duplicates(make_bus) -> None:
    bus, _ = make_bus()
    kv = bus.kv
    a, b, c = _colliding_keys(SMALL.slots, 3)
    for k in (a, b, c):
        kv.set(k, k.encode())
    kv.unset(a)  # a tombstone now sits before b and c in the chain
    kv.set(c, b"new")  # must update c in place, not insert a second c into the tombstone
    kv.set(b, b"new-b")
    assert sorted(kv.list()) == sorted([b, c])
    assert kv.get(c) == b"new" and kv.get(b) == b"new-b"
    assert [s.key for s in kv.scan()].count(c) == 1
    kv.set(a, b"back")  # reuses the tombstone
    assert kv.get(a) == b"back" and len(kv.scan()) == 3


def test_tombstones_at_chain_end_become_empty(make_bus) -> None:
    bus, _ = make_bus()
    kv = bus.kv
    keys = _colliding_keys(SMALL.slots, 4)
    for k in keys:
        kv.set(k, b"x")
    for k in reversed(keys):
        kv.unset(k)
    assert kv.counts()["tombstones"] == 0  # every chain ended in an empty slot
    kv.set(keys[0], b"y")
    kv.unset(keys[0])
    kv.set(keys[1], b"y")
    kv.unset(keys[0])
    assert kv.get(keys[1]) == b"y"


def test_cross_slot_cache_is_validated(make_bus) -> None:
    """A key moved by another process (unset + reinsert elsewhere) is found, never a stale slot."""
    bus1, path = make_bus()
    bus2 = Bus.open(path)
    try:
        a, b = _colliding_keys(SMALL.slots, 2)
        bus1.kv.set(a, b"a1")
        bus1.kv.set(b, b"b1")
        assert bus2.kv.get(a) == b"a1" and bus2.kv.get(b) == b"b1"  # bus2 caches both slots
        bus1.kv.unset(a)
        bus1.kv.unset(b)
        bus1.kv.set(b, b"b2")  # b now lives in a's old slot
        assert bus2.kv.get(a) is None
        assert bus2.kv.get(b) == b"b2"
        bus2.kv.set(b, b"b3")
        assert bus1.kv.get(b) == b"b3"
    finally:
        bus2.close()


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("", "empty"),
        (b"", "empty"),
        ("k" * 33, "33 bytes long; this bus allows at most 32"),
        ("é" * 17, "34 bytes long"),
        (b"\xff\xfe", "not valid UTF-8"),
        ("\udcff", "not encodable as UTF-8"),
        (42, "keys are str"),
    ],
)
def test_bad_keys_are_rejected_never_truncated(make_bus, key, match) -> None:
    bus, _ = make_bus()
    with pytest.raises(InvalidKey, match=match):
        bus.kv.set(key, b"v")
    with pytest.raises(InvalidKey):
        bus.kv.get(key)
    assert bus.kv.list() == []


def test_key_at_limit_and_utf8_bytes_key(make_bus) -> None:
    bus, _ = make_bus()
    bus.kv.set("k" * 32, b"v")
    assert bus.kv.get("k" * 32) == b"v"
    bus.kv.set("ключ".encode(), b"w")
    assert bus.kv.get("ключ") == b"w"


def test_value_over_limit(make_bus) -> None:
    bus, _ = make_bus()
    bus.kv.set("k", b"x" * SMALL.max_value)
    with pytest.raises(ValueTooLarge) as e:
        bus.kv.set("k", b"x" * (SMALL.max_value + 1))
    assert (e.value.size, e.value.limit) == (SMALL.max_value + 1, SMALL.max_value)
    assert "257 bytes" in str(e.value) and "256" in str(e.value)
    assert bus.kv.get("k") == b"x" * SMALL.max_value  # the old value is untouched


def test_full_store(make_bus) -> None:
    g = Geometry(slots=8, max_key=16, max_value=16, channels=1, channel_capacity=4096,
                 max_envelope=1024)
    bus, _ = make_bus(g)
    for i in range(8):
        bus.kv.set(f"k{i}", b"v")
    with pytest.raises(StoreFull, match="all 8 slots"):
        bus.kv.set("one-more", b"v")
    bus.kv.set("k3", b"update works")
    assert bus.kv.get("k3") == b"update works"
    bus.kv.unset("k0")
    bus.kv.set("one-more", b"v")
    assert sorted(bus.kv.list()) == sorted(["one-more"] + [f"k{i}" for i in range(1, 8)])


def test_ttl_expiry_ephemeral_and_evict(make_bus) -> None:
    clock = FakeClock(1.0)
    bus, _ = make_bus(clock=clock.ns)
    kv = bus.kv
    kv.set("short", b"s", ttl_ms=100)
    kv.set("eph", b"e", ephemeral=True)
    kv.set("plain", b"p")
    assert kv.get("short") == b"s"
    info = kv.info("eph")
    assert info is not None and info.ephemeral and info.expiry_ns == 0
    clock.advance(0.150)
    assert kv.get("short") is None  # expired: not found, even before the keeper evicts it
    assert sorted(kv.list()) == ["eph", "plain"]
    expired = kv.expired()
    assert [s.key for s in expired] == ["short"]
    assert kv.evict(expired[0].index, expired[0].keygen) is True
    assert kv.evict(expired[0].index, expired[0].keygen) is False  # already gone
    assert kv.counts()["evictions"] == 1
    # a key re-inserted since the scan is spared
    kv.set("short", b"again", ttl_ms=1)
    stale = kv.info("short")
    kv.unset("short")
    kv.set("short", b"fresh")
    assert kv.evict(stale.index, stale.keygen) is False
    assert kv.get("short") == b"fresh"
    # setting again clears the TTL
    kv.set("x", b"1", ttl_ms=10)
    kv.set("x", b"2")
    clock.advance(1.0)
    assert kv.get("x") == b"2"


def test_access_time_and_read_counter(make_bus) -> None:
    clock = FakeClock(1.0)
    bus, _ = make_bus(clock=clock.ns)
    bus.kv.set("k", b"v")
    t0 = bus.kv.info("k").atime_ns
    for _ in range(5):
        bus.kv.get("k")
    assert bus.kv.info("k").reads == 5
    assert bus.kv.info("k").atime_ns == t0  # within the same millisecond: not rewritten
    clock.advance(0.002)
    bus.kv.get("k")
    assert bus.kv.info("k").atime_ns == clock.ns()


def test_unset_scrubs_the_value_bytes(make_bus) -> None:
    bus, path = make_bus()
    secret = b"correct horse battery staple"
    bus.kv.set("secret", secret)
    bus.kv.set("secret", b"other")
    bus.kv.unset("secret")
    with open(path, "rb") as f:
        assert secret not in f.read()


def _child_set(path: str, key: str, value: bytes) -> None:
    with Bus.open(path) as bus:
        bus.kv.set(key, value)


def _child_get(path: str, key: str, out) -> None:
    with Bus.open(path) as bus:
        out.put(bus.kv.get(key))


def test_set_in_one_process_is_read_at_once_by_another(make_bus, mp) -> None:
    bus, path = make_bus()
    assert bus.kv.get("x") is None  # a miss first, so nothing can be cached here
    p = mp.Process(target=_child_set, args=(path, "x", b"from child"))
    p.start()
    p.join(10)
    assert p.exitcode == 0
    assert bus.kv.get("x") == b"from child"
    bus.kv.set("y", b"from parent")
    out = mp.Queue()
    p = mp.Process(target=_child_get, args=(path, "y", out))
    p.start()
    assert out.get(timeout=10) == b"from parent"
    p.join(10)
    bus.kv.set("x", b"updated")
    p = mp.Process(target=_child_get, args=(path, "x", out))
    p.start()
    assert out.get(timeout=10) == b"updated"
    p.join(10)


def test_threads_of_one_process_exclude_each_other(make_bus) -> None:
    import threading

    bus, _ = make_bus()
    errors: list[BaseException] = []

    def work(tag: int) -> None:
        try:
            for i in range(300):
                bus.kv.set(f"t{i % 20}", bytes([tag]) * 200)
                v = bus.kv.get(f"t{(i * 7) % 20}")
                assert v is None or (len(v) == 200 and len(set(v)) == 1)
                if i % 50 == 0:
                    bus.kv.unset(f"t{i % 20}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(bus.kv.list()) == len(set(bus.kv.list()))
    assert os.getpid() == bus.identity[0]


def test_bus_shorthands_and_value_types(make_bus) -> None:
    bus, _ = make_bus()
    bus.set("k", bytearray(b"ba"))
    assert bus.get("k") == b"ba"
    bus.set("k", memoryview(b"mv"), ttl_ms=60_000, ephemeral=True)
    assert bus.get("k") == b"mv" and bus.list() == ["k"]
    assert bus.unset("k") and bus.get("k") is None
    with pytest.raises(TypeError, match="bytes or str"):
        bus.set("k", 42)
    with pytest.raises(ValueError, match="ttl_ms"):
        bus.set("k", b"v", ttl_ms=0)


def test_a_ttl_beyond_the_expiry_word_is_refused_before_anything_is_written(make_bus) -> None:
    """A TTL whose deadline would not fit the slot's 64-bit expiry word used to fail half-way
    through the write (inside the locks) with a memoryview error; now it is refused up front."""
    bus, _ = make_bus()
    bus.set("k", b"old")
    for key in ("k", "new"):
        with pytest.raises(InvalidTtl, match=r"ttl_ms 99999999999999999999: .* 1 to 3153600000000"):
            bus.set(key, b"v", ttl_ms=99_999_999_999_999_999_999)
    assert bus.get("k") == b"old" and bus.get("new") is None
    assert bus.kv.counts()["live"] == 1
    assert bus.kv.repair().scrubbed == 0  # nothing half-written was left in a free slot
    bus.set("k", b"v", ttl_ms=MAX_KEY_TTL_MS)
    assert bus.get("k") == b"v"
