"""Per-component counters live in the segment, so another process (`runa bus export`) sees them."""

from __future__ import annotations

import json

import pytest

from runa.splinter import Bus
from runa.splinter.errors import SplinterError, StatsTableFull

from .support import SMALL


def _count(path: str) -> None:
    with Bus.open(path) as bus:
        st = bus.component_stats("tieto")
        st.incr("msgs_in", 5)
        st.incr("bad_schema")


def test_counters_are_shared_and_exported(make_bus, mp) -> None:
    bus, path = make_bus()
    p = mp.Process(target=_count, args=(path,))
    p.start()
    p.join(10)
    assert p.exitcode == 0
    bus.component_stats("tieto").incr("msgs_out", 2)
    snap = bus.stats.snapshot()
    assert snap["tieto"]["msgs_in"] == 5 and snap["tieto"]["bad_schema"] == 1
    assert snap["tieto"]["msgs_out"] == 2
    bus.kv.set("k", b"v")
    bus.queue("svc")
    exported = bus.export()
    json.dumps(exported)  # plain data
    assert exported["kv"]["live"] == 1 and exported["channels"][0]["name"] == "svc"
    assert exported["geometry"]["slots"] == SMALL.slots


def test_stats_table_limits(make_bus) -> None:
    bus, _ = make_bus()
    for i in range(SMALL.stats_entries):
        bus.component_stats(f"c{i}")
    assert bus.component_stats("c0").name == "c0"  # existing entries are found, not added
    with pytest.raises(StatsTableFull):
        bus.component_stats("one-too-many")
    with pytest.raises(SplinterError):
        bus.component_stats("")
    with pytest.raises(KeyError):
        bus.component_stats("c1").incr("no_such_counter")
