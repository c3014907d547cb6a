"""The decrypted inside of a vault: named values, encoded into and read from one buffer.

The encoding (all integers little-endian)::

    u32 count
    count times, sorted by name, names unique:
        u8 name length, name (ASCII), u64 updated (ms since the epoch), u32 size, value

``Contents`` reads values straight out of the decrypted buffer, and each change encodes a new
buffer; every buffer that held values is wiped as soon as it is no longer needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from runa.coven.secret import SecretBytes
from runa.crypto import sodium

_COUNT = struct.Struct("<I")
_NAME_LEN = struct.Struct("<B")
_META = struct.Struct("<QI")


class MalformedContents(ValueError):
    """Decrypted contents that do not follow the encoding (a bug, or a forged vault)."""


@dataclass(frozen=True)
class SecretInfo:
    """What ``list`` shows of a secret: its name, when it was last set and its size in
    bytes, never its value."""

    name: str
    updated_ms: int
    size: int = 0


@dataclass(frozen=True)
class _Slot:
    updated_ms: int
    start: int
    end: int


class Contents:
    """The secrets of one decrypted vault; owns (and wipes) its buffer."""

    def __init__(self, buffer: bytearray) -> None:
        self._buffer = buffer
        self._slots = _index(buffer)

    @classmethod
    def empty(cls) -> Contents:
        return cls(bytearray(_COUNT.pack(0)))

    def names(self) -> list[SecretInfo]:
        return [SecretInfo(name, slot.updated_ms, slot.end - slot.start)
                for name, slot in self._slots.items()]

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, name: str) -> SecretBytes:
        """A copy of ``name``'s value (KeyError if absent), which the caller wipes."""
        slot = self._slots[name]
        return SecretBytes(memoryview(self._buffer)[slot.start:slot.end])

    def with_value(self, name: str, value: bytes | bytearray | memoryview,
                   updated_ms: int) -> Contents:
        """New contents with ``name`` set to ``value``; these stay as they are."""
        return self._rebuild(name, memoryview(value).cast("B"), updated_ms)

    def without(self, name: str) -> Contents:
        """New contents without ``name`` (KeyError if absent)."""
        if name not in self._slots:
            raise KeyError(name)
        return self._rebuild(name, None, 0)

    @property
    def plaintext(self) -> memoryview:
        """The encoded buffer, for encryption only."""
        return memoryview(self._buffer).toreadonly()

    def wipe(self) -> None:
        sodium.wipe(self._buffer)
        self._buffer = bytearray()
        self._slots = {}

    def __enter__(self) -> Contents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()

    def __repr__(self) -> str:
        return f"<Contents: {len(self._slots)} secrets>"

    def _rebuild(self, name: str, value: memoryview | None, updated_ms: int) -> Contents:
        entries: dict[str, tuple[int, memoryview]] = {
            key: (slot.updated_ms, memoryview(self._buffer)[slot.start:slot.end])
            for key, slot in self._slots.items()}
        if value is None:
            del entries[name]
        else:
            entries[name] = (updated_ms, value)
        size = _COUNT.size + sum(_NAME_LEN.size + len(key) + _META.size + len(data)
                                 for key, (_, data) in entries.items())
        out = sodium.lock_memory(bytearray(size))
        _COUNT.pack_into(out, 0, len(entries))
        at = _COUNT.size
        for key in sorted(entries):
            stamp, data = entries[key]
            encoded = key.encode("ascii")
            _NAME_LEN.pack_into(out, at, len(encoded))
            at += _NAME_LEN.size
            out[at:at + len(encoded)] = encoded
            at += len(encoded)
            _META.pack_into(out, at, stamp, len(data))
            at += _META.size
            out[at:at + len(data)] = data
            at += len(data)
        return Contents(out)


def _index(buffer: bytearray) -> dict[str, _Slot]:
    view = memoryview(buffer)
    try:
        (count,) = _COUNT.unpack_from(view, 0)
        at = _COUNT.size
        slots: dict[str, _Slot] = {}
        previous = ""
        for _ in range(count):
            (length,) = _NAME_LEN.unpack_from(view, at)
            at += _NAME_LEN.size
            name = bytes(view[at:at + length]).decode("ascii")
            at += length
            updated_ms, size = _META.unpack_from(view, at)
            at += _META.size
            if at + size > len(view) or not name or name <= previous:
                raise MalformedContents("an entry runs past the end or is out of order")
            slots[name] = _Slot(updated_ms, at, at + size)
            at += size
            previous = name
    except (struct.error, UnicodeDecodeError) as error:
        raise MalformedContents(str(error)) from None
    if at != len(view):
        raise MalformedContents("bytes after the last entry")
    return slots
