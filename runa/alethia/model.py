"""What the store takes and gives (exported by ``runa.alethia.store``, the contract)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Keys:
    """What the store is opened with: the memory keys by version (the highest is current;
    older ones open days not yet re-wrapped) and the Ed25519 signing seed. The caller wipes."""

    memory: dict[int, bytearray]
    signing_seed: bytearray


@dataclass(frozen=True)
class Durability:
    """How much an unclean stop may lose: appends are fsynced (and signed) once ``records``
    are pending or the oldest pending is ``ms`` old, whichever comes first."""

    records: int = 64
    ms: int = 200


@dataclass(frozen=True)
class Entry:
    """What ``list`` shows of a record, without its text."""

    id: str
    time: float
    kind: str
    conversation: str | None
    persona: str | None
    forgotten: bool = False
    source: str | None = None  # a document passage's source (``ingest``)


@dataclass(frozen=True)
class Record:
    """A record decrypted: its entry and its body (for a turn: ``user``, ``answer``,
    ``conversation``, ``persona``, ``interventions``, ``feedback``)."""

    entry: Entry
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """One thing ``verify`` found: the day, the record's place in it (None for the day as a
    whole; ``alethia.json`` for ``public_key``), and what is wrong — altered, removed,
    reordered, inserted, signature, missing, unsigned, public_key."""

    day: str
    index: int | None
    kind: str
    message: str


@dataclass(frozen=True)
class Report:
    """What ``verify`` walked and found; ``ok`` when nothing. ``public_key`` is the key the
    signatures were checked with; ``key_checked`` whether the caller gave it (from the
    signing seed), rather than it being taken from ``alethia.json``, which whoever writes
    the files can replace."""

    days: int
    records: int
    forgotten: int
    unsigned: int
    public_key: str
    problems: tuple[Problem, ...] = ()
    key_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems
