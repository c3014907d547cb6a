"""Per-component counters kept in the segment, so ``runa bus export`` can read them from outside.

One 128-byte entry per component name: a state word, the name, eight u64 counters. Entries are
claimed under the stats-table lock; increments are plain word stores without a lock (a counter
costs ~0.1 µs, not a syscall), so two processes of the *same* component incrementing the *same*
counter at the same instant may lose a count. The counters are for observability, not accounting.
"""

from __future__ import annotations

from runa.splinter.errors import SplinterError, StatsTableFull
from runa.splinter.layout import (
    HDR_COUNTERS,
    K_SWEEPS,
    KEEPER_COUNTERS,
    LOCK_STATS_TABLE,
    MAX_COMPONENT_NAME,
    STAT_COUNTERS_OFF,
    STAT_FIELDS,
    STAT_NAME_OFF,
    STAT_NAMELEN,
    STAT_STATE,
)
from runa.splinter.locks import WriterLocks
from runa.splinter.segment import Segment

_FIELD_INDEX = {f: i for i, f in enumerate(STAT_FIELDS)}


class ComponentStats:
    """The counters of one component; ``incr("msgs_in")`` etc. (fields: layout.STAT_FIELDS)."""

    def __init__(self, segment: Segment, name: str, entry: int) -> None:
        self.name = name
        self._W = segment.words
        self._base = (segment.layout.stat(entry) + STAT_COUNTERS_OFF) >> 3

    def incr(self, field: str, n: int = 1) -> None:
        self._W[self._base + _FIELD_INDEX[field]] += n

    def get(self) -> dict[str, int]:
        return {f: self._W[self._base + i] for i, f in enumerate(STAT_FIELDS)}


class StatsTable:
    """The stats table of one open segment."""

    def __init__(self, segment: Segment, locks: WriterLocks) -> None:
        self.segment = segment
        self.locks = locks

    def _entries(self) -> list[tuple[int, str]]:
        W, mm, lay = self.segment.words, self.segment.mm, self.segment.layout
        out = []
        for e in range(self.segment.geometry.stats_entries):
            off = lay.stat(e)
            if W[(off >> 3) + STAT_STATE]:
                n = min(W[(off >> 3) + STAT_NAMELEN], MAX_COMPONENT_NAME)
                raw = mm[off + STAT_NAME_OFF : off + STAT_NAME_OFF + n]
                out.append((e, raw.decode("utf-8", "replace")))
        return out

    def component(self, name: str) -> ComponentStats:
        """The counters of ``name``, creating its entry on first use."""
        nb = name.encode("utf-8") if isinstance(name, str) else b""
        if not nb or len(nb) > MAX_COMPONENT_NAME:
            raise SplinterError(
                f"component name {name!r}: must be 1..{MAX_COMPONENT_NAME} bytes of UTF-8"
            )
        for e, n in self._entries():
            if n == name:
                return ComponentStats(self.segment, name, e)
        W, mm, lay = self.segment.words, self.segment.mm, self.segment.layout
        with self.locks.hold(LOCK_STATS_TABLE):
            taken = dict((n, e) for e, n in self._entries())
            if name in taken:
                return ComponentStats(self.segment, name, taken[name])
            used = set(taken.values())
            for e in range(self.segment.geometry.stats_entries):
                if e in used:
                    continue
                off = lay.stat(e)
                mm[off + STAT_NAME_OFF : off + STAT_NAME_OFF + len(nb)] = nb
                W[(off >> 3) + STAT_NAMELEN] = len(nb)
                W[(off >> 3) + STAT_STATE] = 1  # publish
                return ComponentStats(self.segment, name, e)
        raise StatsTableFull(name, self.segment.geometry.stats_entries)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every component's counters by name."""
        return {n: ComponentStats(self.segment, n, e).get() for e, n in self._entries()}


class KeeperCounters:
    """The keeper's counters (layout.KEEPER_COUNTERS), kept in the segment header.

    They live in the header, not in the keeper's stats entry, because a stats entry has room for
    exactly the eight message counters and the header page had reserved words to spare (so the
    layout version stays 1). One writer, the keeper; anyone may read them.
    """

    def __init__(self, segment: Segment) -> None:
        self._W = segment.words
        self._base = HDR_COUNTERS // 8 + K_SWEEPS
        self._index = {f: i for i, f in enumerate(KEEPER_COUNTERS)}

    def incr(self, field: str, n: int = 1) -> None:
        self._W[self._base + self._index[field]] += n

    def put(self, field: str, value: int) -> None:
        self._W[self._base + self._index[field]] = value

    def get(self) -> dict[str, int]:
        return {f: self._W[self._base + i] for i, f in enumerate(KEEPER_COUNTERS)}
