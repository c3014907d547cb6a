"""The store: day files of encrypted records under a hash chain, signed by day (CONTRACT).

This module's names and signatures are the contract the daemon and the CLI are written
against; the bodies are filled in by the store's own change.

Layout under ``root`` (``Paths.data / "alethia"``), docs/alethia.md:
- one file per UTC day of records, each record encrypted on its own (XChaCha20-Poly1305, a
  fresh nonce) under that day's data key; the day's data key wrapped by the memory key of a
  version (``Keys.memory``), so rotating the memory key re-wraps day keys and re-encrypts
  nothing (the chain and the signatures stay as they were);
- a hash chain over the records' ciphertext hashes (a forgotten record keeps its hash, so the
  chain still verifies), each day's first link naming the previous day's head;
- Ed25519 signatures over each day's chain head (at the day's end, on ``sign``, and at
  every durable batch), and the public key, so ``verify`` needs no secret key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runa.errors import RunaError

#: coven's names: the memory key of version N (32 random bytes) and the signing seed.
MEMORY_KEY = "alethia.memory_key.v{version}"
SIGNING_KEY = "alethia.signing_key"


class StoreError(RunaError):
    """Something about alethia's store; the message names the file or record, never text."""

    exit_code = 74  # EX_IOERR


class WrongKey(StoreError):
    """A memory key that does not open the store's day keys (or a signing key that is not the
    store's); nothing was written."""

    exit_code = 77  # EX_NOPERM


class StoreFull(StoreError):
    """The disk is full: the record was not written and the chain is as it was before."""


class UnknownRecord(StoreError):
    """No record with this id (or it was forgotten)."""

    exit_code = 66  # EX_NOINPUT


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


@dataclass(frozen=True)
class Record:
    """A record decrypted: its entry and its body (for a turn: ``user``, ``answer``,
    ``conversation``, ``persona``, ``interventions``, ``feedback``)."""

    entry: Entry
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """One thing ``verify`` found: the day, the record's place in it (None for the day as a
    whole), and what is wrong — altered, removed, reordered, inserted, signature, missing."""

    day: str
    index: int | None
    kind: str
    message: str


@dataclass(frozen=True)
class Report:
    """What ``verify`` walked and found; ``ok`` when nothing."""

    days: int
    records: int
    forgotten: int
    unsigned: int
    public_key: str
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


class Store:
    """The open store: one writer (the daemon) at a time, under a lock file."""

    @classmethod
    def open(cls, root: Path, keys: Keys, *, clock: Callable[[], float] = time.time,
             durability: Durability = Durability()) -> Store:
        """Open (or create) the store at ``root``: a torn tail is cut (and said), day keys
        are opened with ``keys`` (``WrongKey`` if they do not open them)."""
        raise NotImplementedError

    def append(self, kind: str, body: Mapping[str, Any], *, at: float | None = None) -> str:
        """Encrypt, chain and queue one record; its id. Durable within ``durability``."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write and fsync what is pending, and sign each touched day's head."""
        raise NotImplementedError

    def due(self) -> float | None:
        """Seconds until pending appends must be flushed (None when nothing is pending):
        the daemon's loop waits at most this long."""
        raise NotImplementedError

    def entries(self, *, since: float | None = None, conversation: str | None = None,
                after: str | None = None) -> Iterator[Entry]:
        """Every record's entry, oldest first, filtered."""
        raise NotImplementedError

    def read(self, record_id: str) -> Record:
        """One record decrypted (``UnknownRecord`` if absent or forgotten)."""
        raise NotImplementedError

    def forget(self, record_id: str) -> None:
        """Destroy the record's ciphertext on disk (the day file rewritten atomically) and
        leave a signed tombstone; the chain still verifies."""
        raise NotImplementedError

    def forget_conversation(self, conversation: str) -> list[str]:
        """Forget every record of ``conversation``; their ids."""
        raise NotImplementedError

    def rotate(self, version: int, key: bytearray) -> None:
        """Re-wrap every day's key under memory key ``version`` (crash-safe: each day file's
        key is replaced atomically and names its version, so a half-done rotation opens
        with both keys and finishes on the next rotate)."""
        raise NotImplementedError

    def status(self) -> Mapping[str, Any]:
        """The fields of ``runa.protocol.memory.STATUS_FIELDS`` the store knows."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush, sign and release the lock."""
        raise NotImplementedError


def verify(root: Path) -> Report:
    """Walk every day's chain and signatures with the store's public key; no secret key, no
    daemon needed. Names the first altered, removed, reordered or inserted record of each day
    and each day whose signature fails; untouched days verify on their own."""
    raise NotImplementedError


def snapshot(root: Path, target: Path) -> None:
    """Copy the store (as encrypted as it is) to the new file ``target``, consistently."""
    raise NotImplementedError


def restore(source: Path, root: Path) -> Report:
    """Check that ``source`` is a snapshot that verifies, then replace the store with it
    atomically; the report of the restored store."""
    raise NotImplementedError
