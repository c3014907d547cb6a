"""Events on the ``events`` channel (docs/protocol.md, Events): built here, read by whoever
subscribes, so the keeper and tieto agree on one shape."""

from __future__ import annotations

from typing import Any

from runa.splinter import SlotInfo

PROMOTE = "promote"
"""A key read often enough to deserve a longer life (the keeper's decay sweep)."""


def promote(slot: SlotInfo, now_ns: int, bus_name: str) -> dict[str, Any]:
    """The payload of a ``promote`` event for ``slot`` at ``now_ns`` on bus ``bus_name``."""
    return {
        "op": PROMOTE,
        "key": slot.key,
        "reads": slot.reads - slot.promoted_reads,
        "total_reads": slot.reads,
        "bytes": slot.length,
        "ephemeral": slot.ephemeral,
        "ttl_ms": max(0, (slot.expiry_ns - now_ns) // 1_000_000) if slot.expiry_ns else None,
        "idle_ms": max(0, (now_ns - slot.atime_ns) // 1_000_000),
        "bus": bus_name,
    }
