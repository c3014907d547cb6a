"""Whole-table scans for decay and observability: idle keys, hot keys, promote candidates.

Each scan copies one or two slot-header words of every slot in C (``KV.column``) and looks at
the few slots that qualify in Python, so a scan of 50,000 slots costs a few milliseconds and the
keeper can afford one every sweep. Scans take no lock: what they return is a candidate list, and
the removal or marking that follows (``KV.expire_idle``, ``KV.mark_promoted``) re-checks under
the slot's lock. The policy (when to sweep, thresholds) is the keeper's, not this library's.
"""

from __future__ import annotations

import heapq
from itertools import compress

from runa.splinter.kv import KV, SlotInfo
from runa.splinter.layout import (
    FLAG_EPHEMERAL,
    S_ATIME,
    S_FLAGS,
    S_PROMOTED_AT,
    S_PROMOTED_READS,
    S_READS,
)


def idle_ephemeral(kv: KV, now_ns: int, idle_ns: int) -> list[SlotInfo]:
    """Live ephemeral keys neither read nor written for at least ``idle_ns``."""
    flags = kv.column(S_FLAGS)
    cands = [i for i in compress(range(len(flags)), flags) if flags[i] & FLAG_EPHEMERAL]
    if not cands:
        return []
    atime = kv.column(S_ATIME)
    out = []
    for i in cands:
        if now_ns - atime[i] >= idle_ns:
            snap = kv.snapshot(i)
            if snap is not None and snap.ephemeral:
                out.append(snap)
    return out


def hot_keys(kv: KV, n: int) -> list[SlotInfo]:
    """The ``n`` live keys with the most reads since they were inserted, most read first."""
    if n <= 0:
        return []
    reads = kv.column(S_READS)
    top = heapq.nlargest(n, compress(range(len(reads)), reads), key=reads.__getitem__)
    snaps = (kv.snapshot(i) for i in top)
    return sorted((s for s in snaps if s is not None), key=lambda s: -s.reads)


def promote_candidates(kv: KV, threshold: int, cooldown_ns: int, now_ns: int) -> list[SlotInfo]:
    """Keys read ``threshold`` times or more since their last promote and not promoted within
    ``cooldown_ns`` (a key never promoted qualifies on reads alone)."""
    reads = kv.column(S_READS)
    cands = list(compress(range(len(reads)), map(threshold.__le__, reads)))
    if not cands:
        return []
    promoted = kv.column(S_PROMOTED_READS)
    at = kv.column(S_PROMOTED_AT)
    out = []
    for i in cands:
        if reads[i] - promoted[i] < threshold:
            continue
        if at[i] and now_ns - at[i] < cooldown_ns:
            continue
        snap = kv.snapshot(i)
        if snap is not None:
            out.append(snap)
    return out
