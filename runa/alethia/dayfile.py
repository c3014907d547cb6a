"""A day file's lines: one JSON object per line, each ending in a newline (docs/alethia.md).

- ``{"t": "day", "format": 1, "day": D, "prev": HEX}``: the first line, naming the previous
  day's head;
- ``{"t": "rec", "i": N, "h": HEX, "l": HEX, "n": B64, "c": B64}``: record N, its hash, its
  link, nonce and ciphertext; once forgotten, ``"n"`` and ``"c"`` are gone and
  ``"forgot": HEX`` is the tombstone's signature;
- ``{"t": "sig", "count": N, "head": HEX, "sig": HEX}``: the day's head after N records,
  signed; one after every durable batch.

A batch is one write of whole lines ending in its signature line, so whatever follows the
last signature line is a torn tail: a batch a crash cut short, never signed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1


def _line(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def header(day: str, prev: bytes) -> bytes:
    return _line({"t": "day", "format": FORMAT, "day": day, "prev": prev.hex()})


def record(index: int, digest: bytes, link: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    return _line({"t": "rec", "i": index, "h": digest.hex(), "l": link.hex(),
                  "n": base64.b64encode(nonce).decode(),
                  "c": base64.b64encode(ciphertext).decode()})


def tombstone(index: int, digest: bytes, link: bytes, signature: bytes) -> bytes:
    return _line({"t": "rec", "i": index, "h": digest.hex(), "l": link.hex(),
                  "forgot": signature.hex()})


def signature(count: int, head: bytes, sig: bytes) -> bytes:
    return _line({"t": "sig", "count": count, "head": head.hex(), "sig": sig.hex()})


@dataclass(frozen=True)
class Line:
    """One complete line: where it starts, its number (from 1) and its fields (None: junk)."""

    offset: int
    number: int
    fields: dict[str, Any] | None

    @property
    def kind(self) -> str:
        return str(self.fields.get("t")) if self.fields else "junk"

    def blob(self, name: str) -> bytes:
        assert self.fields is not None
        return base64.b64decode(self.fields[name], validate=True)

    def hexes(self, name: str) -> bytes:
        assert self.fields is not None
        return bytes.fromhex(self.fields[name])


@dataclass
class Scan:
    """A day file read: its complete lines, and where the torn tail (if any) starts."""

    lines: list[Line] = field(default_factory=list)
    end: int = 0  # the length of the complete lines
    torn: int = 0  # bytes after them

    @property
    def header(self) -> Line | None:
        first = self.lines[0] if self.lines else None
        return first if first is not None and first.kind == "day" else None

    def signed_end(self) -> int:
        """Where the last batch that was written whole ends (after its signature line);
        0 when no batch was."""
        for position in range(len(self.lines) - 1, -1, -1):
            if self.lines[position].kind == "sig":
                following = self.lines[position + 1:position + 2]
                return following[0].offset if following else self.end
        return 0

    def records(self) -> list[Line]:
        return [line for line in self.lines if line.kind == "rec"]

    def signatures(self) -> list[Line]:
        return [line for line in self.lines if line.kind == "sig"]


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        fields = json.loads(raw)
    except ValueError:
        return None
    return fields if isinstance(fields, dict) and _well_formed(fields) else None


def _hex(value: Any, size: int) -> bool:
    """Lowercase hex of ``size`` bytes, as written: another spelling of it is a change."""
    return (isinstance(value, str) and len(value) == 2 * size and value == value.lower()
            and len(bytes.fromhex(value)) == size)


def _base64(value: Any) -> bool:
    return isinstance(value, str) and base64.b64encode(
        base64.b64decode(value, validate=True)).decode() == value


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _well_formed(fields: dict[str, Any]) -> bool:
    """Whether ``fields`` are a line as the store writes it (keys, types, spellings)."""
    try:
        kind = fields["t"]
        if kind == "day":
            return (set(fields) == {"t", "format", "day", "prev"} and fields["format"] == FORMAT
                    and isinstance(fields["day"], str) and _hex(fields["prev"], 32))
        if kind == "rec":
            ok = _index(fields["i"]) and _hex(fields["h"], 32) and _hex(fields["l"], 32)
            if "forgot" in fields:
                return ok and set(fields) == {"t", "i", "h", "l", "forgot"} and _hex(
                    fields["forgot"], 64)
            return (ok and set(fields) == {"t", "i", "h", "l", "n", "c"}
                    and _base64(fields["n"]) and _base64(fields["c"]))
        if kind == "sig":
            return (set(fields) == {"t", "count", "head", "sig"} and _index(fields["count"])
                    and _hex(fields["head"], 32) and _hex(fields["sig"], 64))
    except (KeyError, TypeError, ValueError):
        return False
    return False


def scan(data: bytes) -> Scan:
    """Split a day file into its complete lines (``torn``: the bytes after the last one)."""
    out = Scan()
    offset = 0
    number = 0
    while offset < len(data):
        newline = data.find(b"\n", offset)
        if newline < 0:
            break
        number += 1
        out.lines.append(Line(offset, number, _parse(data[offset:newline])))
        offset = newline + 1
    out.end = offset
    out.torn = len(data) - out.end
    return out
