"""The envelope: the one message shape on every channel (docs/protocol.md is the contract).

UTF-8 JSON with ``id`` (UUIDv7), ``ts`` (RFC 3339 UTC), ``from``, ``to`` ("*" = broadcast),
``type`` (query, response, event, error, heartbeat) and ``payload`` (an object); optional
``reply_to``, ``ttl_ms``, ``trace``, ``seq``, ``eof``. Unknown fields are ignored. ``decode`` of
anything else raises BadSchema (1000) or UnknownType (3000) carrying whatever could be salvaged
(id, reply_to, from), so the reader can answer the sender and keep running.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from runa.splinter.errors import BadSchema, BusFault, MessageTooLarge, UnknownType


class Fault(IntEnum):
    """Fault codes of DESIGN §2; an error envelope's payload is {code, name, message}."""

    BAD_SCHEMA = 1000
    TTL_EXPIRED = 1001
    NOT_AUTHORIZED = 2000
    UNKNOWN_TYPE = 3000
    BACKPRESSURE = 4100
    STREAM_TIMEOUT = 4200
    INTERNAL_ERROR = 5000


TYPES = frozenset({"query", "response", "event", "error", "heartbeat"})
BROADCAST = "*"
MAX_ID = 128
MAX_NAME = 128
# A request's ttl_ms: one day, as a request that waited longer is not worth answering.
# (Not a key's TTL, which kv.MAX_KEY_TTL_MS bounds to 100 years.)
MAX_REQUEST_TTL_MS = 86_400_000
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def uuid7(now_ns: int | None = None, rand: Callable[[int], bytes] = os.urandom) -> str:
    """A UUIDv7 (RFC 9562) string: 48-bit Unix ms, 12 bits of sub-millisecond time, 62 random.

    Using the sub-millisecond fraction as ``rand_a`` (RFC 9562 §6.2, method 3) keeps ids from one
    process sortable by time without any shared counter state.
    """
    ns = time.time_ns() if now_ns is None else now_ns
    ms, sub = divmod(ns, 1_000_000)
    rand_a = sub * 4096 // 1_000_000
    rand_b = int.from_bytes(rand(8), "big") & ((1 << 62) - 1)
    value = (
        ((ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    )
    return str(uuid.UUID(int=value))


def uuid7_time_ms(u: str) -> int:
    """The Unix millisecond timestamp inside a UUIDv7 string."""
    return uuid.UUID(u).int >> 80


def rfc3339(now_ns: int | None = None) -> str:
    """RFC 3339 UTC timestamp with microseconds: ``2026-11-26T07:29:00.123456Z``."""
    ns = time.time_ns() if now_ns is None else now_ns
    sec, rem = divmod(ns, 1_000_000_000)
    t = time.gmtime(sec)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', t)}.{rem // 1000:06d}Z"


def parse_rfc3339(ts: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp (raises ValueError)."""
    if not _TS_RE.match(ts):
        raise ValueError(f"not an RFC 3339 timestamp: {ts!r}")
    s = ts.replace("Z", "+00:00")
    m = re.match(r"^(.*\.)(\d+)(.*)$", s)
    if m and len(m.group(2)) > 6:  # Python parses at most microseconds
        s = m.group(1) + m.group(2)[:6] + m.group(3)
    return _dt.datetime.fromisoformat(s).timestamp()


@dataclass
class Envelope:
    """One message. ``sender`` is the wire field ``from`` (a Python keyword)."""

    type: str
    sender: str
    to: str
    payload: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=uuid7)
    ts: str = field(default_factory=rfc3339)
    reply_to: str | None = None
    ttl_ms: int | None = None
    trace: str | None = None
    seq: int | None = None
    eof: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, "ts": self.ts, "from": self.sender, "to": self.to,
            "type": self.type, "payload": self.payload,
        }
        for k in ("reply_to", "ttl_ms", "trace", "seq", "eof"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d

    def expired(self, now: float | None = None) -> bool:
        """True if ``ttl_ms`` has passed since ``ts`` (answer with TTL_EXPIRED, don't process)."""
        if self.ttl_ms is None:
            return False
        t = time.time() if now is None else now
        return t > parse_rfc3339(self.ts) + self.ttl_ms / 1000.0

    @property
    def is_cancel(self) -> bool:
        return self.type == "query" and self.payload.get("op") == "cancel"


# json.dumps builds a new encoder on every call when given options (~3 µs of a ~8 µs encode,
# measured for a 250-byte event); one configured encoder, reused, does not. It holds no state.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(env: Envelope, limit: int | None = None) -> bytes:
    """Compact UTF-8 JSON; raises MessageTooLarge over ``limit`` and BadSchema if invalid."""
    d = env.to_dict()
    _validate(d, env.id, env.reply_to, env.sender)
    data = _COMPACT.encode(d).encode("utf-8")
    if limit is not None and len(data) > limit:
        raise MessageTooLarge(len(data), limit)
    return data


_RAW_FIELD = {
    k: re.compile(rb'"' + k.encode() + rb'"\s*:\s*"([^"\\\x00-\x1f]{1,128})"')
    for k in ("id", "reply_to", "from")
}


def _salvage_raw(data: bytes) -> tuple[str | None, str | None, str | None]:
    """Best effort for bytes that are not JSON: the first simple "id"/"reply_to"/"from" strings."""
    out = []
    for k in ("id", "reply_to", "from"):
        m = _RAW_FIELD[k].search(data)
        try:
            out.append(m.group(1).decode("utf-8") if m else None)
        except UnicodeDecodeError:
            out.append(None)
    return out[0], out[1], out[2]


def _salvage(obj: object) -> tuple[str | None, str | None, str | None]:
    if not isinstance(obj, dict):
        return None, None, None

    def s(k: str) -> str | None:
        v = obj.get(k)
        return v if isinstance(v, str) and 0 < len(v) <= MAX_NAME else None

    return s("id"), s("reply_to"), s("from")


def _validate(d: dict[str, Any], *salvage: str | None) -> None:
    sid, reply_to, sender = salvage

    def bad(msg: str) -> BadSchema:
        return BadSchema(msg, id=sid, reply_to=reply_to, sender=sender)

    for k, limit in (("id", MAX_ID), ("ts", 64), ("from", MAX_NAME), ("to", MAX_NAME)):
        v = d.get(k)
        if not isinstance(v, str) or not v:
            raise bad(f"field {k!r} is required and must be a non-empty string")
        if len(v) > limit:
            raise bad(f"field {k!r} is {len(v)} characters; at most {limit}")
    if not _TS_RE.match(d["ts"]):
        raise bad(f"field 'ts' is not an RFC 3339 timestamp: {d['ts']!r}")
    t = d.get("type")
    if not isinstance(t, str):
        raise bad("field 'type' is required and must be a string")
    if t not in TYPES:
        raise UnknownType(
            f"unknown type {t!r}; expected one of {sorted(TYPES)}",
            id=sid, reply_to=reply_to, sender=sender,
        )
    if "payload" in d and not isinstance(d["payload"], dict):
        raise bad("field 'payload' must be an object")
    if "payload" not in d and t != "heartbeat":
        raise bad("field 'payload' is required (only heartbeats may omit it)")
    for k in ("reply_to", "trace"):
        v = d.get(k)
        if v is not None and (not isinstance(v, str) or not v or len(v) > MAX_NAME):
            raise bad(f"field {k!r} must be a non-empty string of at most {MAX_NAME}")
    for k in ("ttl_ms", "seq"):
        v = d.get(k)
        if v is not None and (type(v) is not int or v < 0):
            raise bad(f"field {k!r} must be a non-negative integer")
    ttl = d.get("ttl_ms")
    if ttl is not None:
        if ttl > MAX_REQUEST_TTL_MS:
            raise bad(f"field 'ttl_ms' is {ttl}; at most {MAX_REQUEST_TTL_MS} (one day)")
        try:  # the expiry is computed from ts: it must be a real time, not only well-formed
            parse_rfc3339(d["ts"])
        except ValueError as error:
            raise bad(f"field 'ts' is not a valid time: {error}") from None
    if d.get("eof") is not None and type(d["eof"]) is not bool:
        raise bad("field 'eof' must be a boolean")
    if t == "query" and d.get("payload", {}).get("op") == "cancel":
        target = d["payload"].get("target")
        if not isinstance(target, str) or not target:
            raise bad("a cancel query needs payload.target, the id to cancel")


def decode(data: bytes | bytearray | memoryview, limit: int | None = None) -> Envelope:
    """Parse and validate one envelope; BadSchema / UnknownType otherwise (never anything else)."""
    if limit is not None and len(data) > limit:
        raise BadSchema(f"envelope is {len(data)} bytes; this bus carries at most {limit}")
    raw = bytes(data)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        sid, reply_to, sender = _salvage_raw(raw)
        raise BadSchema(f"not UTF-8 ({e.reason} at byte {e.start})", id=sid,
                        reply_to=reply_to, sender=sender) from None
    except (ValueError, RecursionError) as e:
        sid, reply_to, sender = _salvage_raw(raw)
        raise BadSchema(f"not JSON ({e})", id=sid, reply_to=reply_to, sender=sender) from None
    sid, reply_to, sender = _salvage(obj)
    if not isinstance(obj, dict):
        raise BadSchema(f"an envelope is a JSON object, not {type(obj).__name__}")
    _validate(obj, sid, reply_to, sender)
    return Envelope(
        type=obj["type"], sender=obj["from"], to=obj["to"], payload=obj.get("payload", {}),
        id=obj["id"], ts=obj["ts"], reply_to=obj.get("reply_to"), ttl_ms=obj.get("ttl_ms"),
        trace=obj.get("trace"), seq=obj.get("seq"), eof=obj.get("eof"),
    )


# -- builders ----------------------------------------------------------------------------------


def query(sender: str, to: str, payload: dict[str, Any], *, reply_to: str | None = None,
          ttl_ms: int | None = None, trace: str | None = None) -> Envelope:
    return Envelope("query", sender, to, payload, reply_to=reply_to, ttl_ms=ttl_ms, trace=trace)


def event(sender: str, payload: dict[str, Any], *, to: str = BROADCAST,
          trace: str | None = None) -> Envelope:
    return Envelope("event", sender, to, payload, trace=trace)


def heartbeat(sender: str, to: str = BROADCAST) -> Envelope:
    return Envelope("heartbeat", sender, to, {})


def cancel(sender: str, to: str, target: str, *, reply_to: str | None = None) -> Envelope:
    """Ask ``to`` to stop working on request ``target`` (a query with op=cancel)."""
    return Envelope("query", sender, to, {"op": "cancel", "target": target}, reply_to=reply_to)


def response(request: Envelope, sender: str, payload: dict[str, Any], *,
             seq: int | None = None, eof: bool | None = None) -> Envelope:
    """A reply to ``request``: same id, addressed to its sender; ``seq``/``eof`` for streams."""
    return Envelope("response", sender, request.sender, payload, id=request.id, seq=seq, eof=eof,
                    trace=request.trace)


def stream(request: Envelope, sender: str, payloads: list[dict[str, Any]]) -> list[Envelope]:
    """A whole streamed reply: seq 0..n-1, eof only on the last."""
    n = len(payloads)
    return [response(request, sender, p, seq=i, eof=(i == n - 1)) for i, p in enumerate(payloads)]


def fault(code: int | Fault, message: str, *, sender: str, to: str, id: str | None = None,
          trace: str | None = None) -> Envelope:
    """An error envelope {code, name, message}; ``id`` is the triggering message's when known."""
    c = Fault(code)
    env = Envelope("error", sender, to, {"code": int(c), "name": c.name, "message": message},
                   trace=trace)
    if id is not None:
        env.id = id
    return env


def error_reply(request: Envelope | None, exc: BusFault, *, sender: str,
                to: str | None = None) -> Envelope:
    """The error envelope answering ``exc``; for BadSchema uses what the exception salvaged."""
    if isinstance(exc, BadSchema) and request is None:
        rid, dest = exc.id, to or exc.sender or exc.reply_to or BROADCAST
    elif request is not None:
        rid, dest = request.id, to or request.sender
    else:
        rid, dest = None, to or BROADCAST
    return fault(exc.code, exc.message, sender=sender, to=dest, id=rid)


def reply_channel(request: Envelope | None, exc: BadSchema | None = None) -> str | None:
    """Where an answer goes: the request's reply_to, or what a BadSchema salvaged."""
    if request is not None:
        return request.reply_to
    return exc.reply_to if exc is not None else None
