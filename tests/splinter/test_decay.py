"""Decay in the library: the full-store eviction order, lock-checked expiry, the scans."""

from __future__ import annotations

import pytest

from runa.splinter import Geometry
from runa.splinter.decay import hot_keys, idle_ephemeral, promote_candidates
from runa.splinter.errors import StoreFull
from runa.testing import FakeClock

MS = 1_000_000
TINY = Geometry(slots=8, max_key=16, max_value=16, channels=1, channel_capacity=4096,
                max_envelope=1024)


def test_full_store_evicts_expired_then_lru_ephemeral_then_refuses(make_bus) -> None:
    clock = FakeClock(1.0)
    bus, _ = make_bus(TINY, clock=clock.ns)
    kv = bus.kv
    kv.set("ttl-a", b"a", ttl_ms=100)
    kv.set("ttl-b", b"b", ttl_ms=100)
    kv.set("eph-old", b"o", ephemeral=True)
    clock.advance(0.005)
    kv.set("eph-new", b"n", ephemeral=True)
    kv.set("eph-was", b"w", ephemeral=True)
    kv.set("eph-was", b"w")  # re-set without the flag: no longer evictable
    kv.set("plain-1", b"1")
    kv.set("plain-2", b"2")
    kv.set("plain-3", b"3")
    clock.advance(0.005)
    assert kv.get("eph-old") == b"o"  # read: now eph-old is the more recently used one
    clock.advance(0.2)  # both TTLs have passed; nobody removed them yet
    assert kv.counts()["live"] == 8

    kv.set("new-1", b"x")  # 1. every expired key goes, not an ephemeral one
    c = kv.counts()
    assert (c["expired"], c["evictions"], c["live"]) == (2, 0, 7)
    assert kv.info("ttl-a") is None and kv.info("ttl-b") is None
    kv.set("new-2", b"x")  # the second expired key's slot: no eviction needed
    assert kv.counts()["evictions"] == 0

    kv.set("new-3", b"x")  # 2. the least recently used ephemeral key
    assert kv.get("eph-new") is None and kv.get("eph-old") == b"o"
    kv.set("new-4", b"x")  # 3. the next least recently used one
    assert kv.get("eph-old") is None
    assert kv.counts()["evictions"] == 2

    with pytest.raises(StoreFull):  # 4. only non-ephemeral, unexpired keys left: full
        kv.set("new-5", b"x")
    c = kv.counts()
    assert (c["expired"], c["evictions"], c["store_full"], c["live"]) == (2, 2, 1, 8)
    kept = ["eph-was", "plain-1", "plain-2", "plain-3", "new-1", "new-2", "new-3", "new-4"]
    assert sorted(kv.list()) == sorted(kept)


def test_expire_rechecks_the_ttl_under_the_lock(make_bus) -> None:
    clock = FakeClock(1.0)
    bus, _ = make_bus(clock=clock.ns)
    kv = bus.kv
    kv.set("k", b"v", ttl_ms=10)
    clock.advance(0.020)
    [stale] = kv.expired()
    kv.set("k", b"renewed", ttl_ms=1000)  # an update in place renews the TTL, same keygen
    assert kv.expire(stale.index, stale.keygen) is False
    assert kv.get("k") == b"renewed" and kv.counts()["expired"] == 0
    clock.advance(2.0)
    [due] = kv.expired()
    assert kv.expire(due.index, due.keygen) is True
    assert kv.info("k") is None and kv.counts()["expired"] == 1
    assert kv.expire(due.index, due.keygen) is False  # already gone


def test_idle_ephemeral_scan_and_expiry(make_bus) -> None:
    clock = FakeClock(1.0)
    bus, _ = make_bus(clock=clock.ns)
    kv = bus.kv
    kv.set("eph-idle", b"1", ephemeral=True)
    kv.set("eph-busy", b"2", ephemeral=True)
    kv.set("plain-idle", b"3")
    clock.advance(1.0)
    kv.get("eph-busy")
    clock.advance(0.5)
    found = idle_ephemeral(kv, clock.ns(), 1000 * MS)
    assert [s.key for s in found] == ["eph-idle"]
    kv.get("eph-idle")  # touched since the scan: spared
    assert kv.expire_idle(found[0].index, found[0].keygen, 1000 * MS) is False
    clock.advance(1.0)
    kv.get("eph-busy")
    [again] = idle_ephemeral(kv, clock.ns(), 1000 * MS)
    assert kv.expire_idle(again.index, again.keygen, 1000 * MS) is True
    assert kv.counts()["idle_expired"] == 1 and kv.get("plain-idle") == b"3"


def test_hot_keys_are_the_most_read_live_keys(make_bus) -> None:
    bus, _ = make_bus()
    kv = bus.kv
    for key, reads in (("a", 3), ("b", 9), ("c", 1), ("d", 0)):
        kv.set(key, b"v")
        for _ in range(reads):
            kv.get(key)
    assert [(s.key, s.reads) for s in hot_keys(kv, 2)] == [("b", 9), ("a", 3)]
    assert [s.key for s in hot_keys(kv, 10)] == ["b", "a", "c"]  # never-read keys are not hot
    kv.unset("b")
    assert [s.key for s in hot_keys(kv, 1)] == ["a"]
    assert [h["key"] for h in bus.hot_keys(5)] == ["a", "c"]


def test_promote_candidates_threshold_and_cooldown(make_bus) -> None:
    clock = FakeClock(1.0)
    bus, _ = make_bus(clock=clock.ns)
    kv = bus.kv
    kv.set("hot", b"v")
    kv.set("warm", b"v")
    for _ in range(5):
        kv.get("hot")
    for _ in range(4):
        kv.get("warm")
    cooldown = 60_000 * MS
    [hot] = promote_candidates(kv, 5, cooldown, clock.ns())
    assert (hot.key, hot.reads, hot.promoted_reads, hot.promoted_at_ns) == ("hot", 5, 0, 0)
    assert kv.mark_promoted(hot.index, hot.keygen, hot.reads, clock.ns()) is True
    assert promote_candidates(kv, 5, cooldown, clock.ns()) == []
    for _ in range(5):
        kv.get("hot")
    clock.advance(30.0)
    assert promote_candidates(kv, 5, cooldown, clock.ns()) == []  # within the cooldown
    clock.advance(30.0)
    [again] = promote_candidates(kv, 5, cooldown, clock.ns())
    assert (again.reads, again.promoted_reads) == (10, 5)
    # a re-inserted key starts over, and a stale mark is refused
    kv.unset("hot")
    kv.set("hot", b"new")
    assert kv.mark_promoted(again.index, again.keygen, again.reads, clock.ns()) is False
    assert kv.info("hot").promoted_at_ns == 0 and kv.info("hot").reads == 0
