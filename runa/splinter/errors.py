"""Errors the splinter bus raises.

Every error names what was asked and why it cannot be done (path, sizes, limits), so the CLI can
print it as one line. Bus faults (``BusFault``) also carry the wire code of DESIGN §2, so a
service can turn any of them into an ``error`` envelope without a lookup table of its own.
"""

from __future__ import annotations

from runa.errors import RunaError


class SplinterError(RunaError):
    """Base of every error of the splinter library."""

    exit_code = 70  # EX_SOFTWARE unless a subclass knows better


# -- segments -----------------------------------------------------------------------------------


class SegmentError(SplinterError):
    """A segment file cannot be created or used; names the path."""

    exit_code = 74  # EX_IOERR

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class SegmentNotFound(SegmentError):
    """No segment exists at the path (the bus was never created, or was removed)."""

    exit_code = 69  # EX_UNAVAILABLE


class SegmentExists(SegmentError):
    """Create refused: a segment is already there (create never truncates a live one)."""


class SegmentDamaged(SegmentError):
    """The file at a segment's path is not a usable segment (cut short, overwritten, or its
    header does not add up). Its contents cannot be trusted; removing the file lets the keeper
    create a fresh one."""


class BadMagic(SegmentDamaged):
    """The file is not a splinter segment (its first bytes are not our magic)."""


class VersionMismatch(SegmentError):
    """The segment was written by another layout version of the library."""

    def __init__(self, path: str, found: int, expected: int) -> None:
        self.found = found
        self.expected = expected
        super().__init__(path, f"layout version {found}, this library reads version {expected}")


class SegmentSizeError(SegmentDamaged):
    """The file size disagrees with the size its header declares (truncated or grown)."""

    def __init__(self, path: str, actual: int, expected: int) -> None:
        self.actual = actual
        self.expected = expected
        super().__init__(
            path, f"file is {actual} bytes but its header declares {expected} bytes"
        )


class SegmentCorrupt(SegmentDamaged):
    """The header is internally inconsistent (geometry does not add up)."""


class NoSpace(SegmentError):
    """The filesystem cannot hold the segment; raised at create time, nothing is left behind."""

    exit_code = 73  # EX_CANTCREAT

    def __init__(self, path: str, needed: int, free: int) -> None:
        self.needed = needed
        self.free = free
        super().__init__(
            path,
            f"no room to create the segment: needs {needed} bytes, {free} bytes free "
            "on that filesystem (raise the tmpfs size or shrink the bus geometry)",
        )


class GeometryError(SplinterError):
    """A requested segment geometry is out of range."""

    exit_code = 64  # EX_USAGE


# -- KV -----------------------------------------------------------------------------------------


class InvalidKey(SplinterError):
    """A key is empty, not valid UTF-8, or longer than the bus allows (never truncated)."""

    exit_code = 64  # EX_USAGE, as every malformed name (an id, a topic) a command is given

    def __init__(self, key: object, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"invalid key {key!r}: {problem}")


class ValueTooLarge(SplinterError):
    """A value is larger than the bus's maximum value size."""

    exit_code = 65

    def __init__(self, key: str, size: int, limit: int) -> None:
        self.key = key
        self.size = size
        self.limit = limit
        super().__init__(f"value for {key!r} is {size} bytes; this bus holds at most {limit}")


class InvalidTtl(SplinterError, ValueError):
    """A key's TTL is not a whole number of milliseconds in the range the expiry word holds."""

    exit_code = 64  # EX_USAGE, as ``runa bus set --ttl`` out of range

    def __init__(self, ttl_ms: object, high: int) -> None:
        self.ttl_ms = ttl_ms
        super().__init__(
            f"ttl_ms {ttl_ms!r}: must be a whole number of milliseconds from 1 to {high} "
            "(100 years), or none"
        )


class StoreFull(SplinterError):
    """Every slot holds a live key: the insert cannot be placed."""

    exit_code = 75  # EX_TEMPFAIL

    def __init__(self, key: str, slots: int) -> None:
        self.key = key
        self.slots = slots
        super().__init__(f"store full: all {slots} slots are in use; cannot insert {key!r}")


# -- channels -----------------------------------------------------------------------------------


class ChannelError(SplinterError):
    """A channel operation cannot be done; names the channel."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"channel {name!r}: {problem}")


class ChannelNotFound(ChannelError):
    """No channel of that name exists (or it was reaped since it was opened)."""


class ChannelBusy(ChannelError):
    """The queue already has a live owner; a queue has exactly one consumer."""


class ChannelTableFull(ChannelError):
    """Every channel (or subscriber) entry is taken."""


class StatsTableFull(SplinterError):
    """Every per-component stats entry is taken (raise geometry.stats_entries)."""

    def __init__(self, component: str, entries: int) -> None:
        self.component = component
        self.entries = entries
        super().__init__(f"stats table full: all {entries} entries taken; cannot add {component!r}")


class SubscriberDropped(ChannelError):
    """This broadcast subscriber fell behind the ring and was dropped; messages were lost.

    Call ``resubscribe()`` to rejoin at the newest message.
    """


# -- faults (wire codes of DESIGN §2) -------------------------------------------------------------


class BusFault(SplinterError):
    """An error that has a fault code on the wire; ``to_payload()`` gives the error payload."""

    code = 5000
    fault_name = "INTERNAL_ERROR"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"{self.fault_name} ({self.code}): {message}")

    def to_payload(self) -> dict[str, object]:
        return {"code": self.code, "name": self.fault_name, "message": self.message}


class BadSchema(BusFault):
    """Bytes that are not a valid envelope. Carries what could be salvaged to answer the sender."""

    code = 1000
    fault_name = "BAD_SCHEMA"

    def __init__(
        self,
        message: str,
        *,
        id: str | None = None,
        reply_to: str | None = None,
        sender: str | None = None,
    ) -> None:
        self.id = id
        self.reply_to = reply_to
        self.sender = sender
        super().__init__(message)


class TtlExpired(BusFault):
    code = 1001
    fault_name = "TTL_EXPIRED"


class NotAuthorized(BusFault):
    code = 2000
    fault_name = "NOT_AUTHORIZED"


class UnknownType(BadSchema):
    """An envelope whose ``type`` is not one of the five; answered with 3000, not 1000."""

    code = 3000
    fault_name = "UNKNOWN_TYPE"


class Backpressure(BusFault):
    """A queue channel is full: nothing was written; retry later (unread data is never lost)."""

    code = 4100
    fault_name = "BACKPRESSURE"

    def __init__(self, channel: str, needed: int, free: int) -> None:
        self.channel = channel
        self.needed = needed
        self.free = free
        super().__init__(
            f"channel {channel!r} is full: message needs {needed} bytes, {free} bytes free"
        )


class StreamTimeout(BusFault):
    code = 4200
    fault_name = "STREAM_TIMEOUT"


class InternalError(BusFault):
    code = 5000
    fault_name = "INTERNAL_ERROR"


class MessageTooLarge(SplinterError):
    """A message to be sent is larger than the bus's per-message limit (the sender's error)."""

    exit_code = 65

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message is {size} bytes; this bus carries at most {limit} per message")
