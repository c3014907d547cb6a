"""Envelope codec, faults, cancel and the builders (DESIGN §2, docs/protocol.md)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from runa.splinter import envelope as E
from runa.splinter.errors import (
    Backpressure,
    BadSchema,
    BusFault,
    MessageTooLarge,
    TtlExpired,
    UnknownType,
)


def test_uuid7_layout_and_order() -> None:
    now = 1_764_000_000_123_456_789
    u = uuid.UUID(E.uuid7(now))
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert E.uuid7_time_ms(str(u)) == now // 1_000_000
    ids = [E.uuid7(now + i * 300_000) for i in range(10)]  # sub-ms steps still sort
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert E.uuid7(rand=lambda n: b"\xff" * n) != E.uuid7(rand=lambda n: b"\x00" * n)


def test_rfc3339() -> None:
    assert E.rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    ts = E.rfc3339()
    assert abs(E.parse_rfc3339(ts) - time.time()) < 5
    assert E.parse_rfc3339("2026-01-01T00:00:00.123456789+01:00") == pytest.approx(
        1767222000.123456)
    with pytest.raises(ValueError):
        E.parse_rfc3339("yesterday")


def test_roundtrip_and_wire_names() -> None:
    env = E.query("chat", "splinfer", {"text": "héllo"}, reply_to="chat", ttl_ms=5000,
                  trace="t-1")
    data = E.encode(env)
    wire = json.loads(data)
    assert wire["from"] == "chat" and "sender" not in wire
    assert set(wire) == {"id", "ts", "from", "to", "type", "payload", "reply_to", "ttl_ms",
                         "trace"}
    assert "héllo".encode() in data  # UTF-8, not \\u escapes
    assert E.decode(data) == env


def test_unknown_fields_are_ignored_and_heartbeat_may_omit_payload() -> None:
    raw = json.dumps({"id": "1", "ts": "2026-01-01T00:00:00Z", "from": "a", "to": "*",
                      "type": "heartbeat", "future_field": [1, 2]}).encode()
    env = E.decode(raw)
    assert env.type == "heartbeat" and env.payload == {}


def _raw(**over) -> bytes:
    d = {"id": "req-1", "ts": "2026-01-01T00:00:00Z", "from": "chat", "to": "svc",
         "type": "query", "payload": {}, "reply_to": "chat"}
    d.update(over)
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (_raw(id=...), "'id' is required"),
        (_raw(ts="noon"), "RFC 3339"),
        (_raw(to=""), "'to' is required"),
        (_raw(payload=[1]), "'payload' must be an object"),
        (_raw(payload=...), "'payload' is required"),
        (_raw(seq=-1), "'seq' must be a non-negative integer"),
        (_raw(ttl_ms=True), "'ttl_ms' must be a non-negative integer"),
        (_raw(eof="yes"), "'eof' must be a boolean"),
        (_raw(payload={"op": "cancel"}), "payload.target"),
    ],
)
def test_malformed_is_bad_schema_with_salvage(data: bytes, match: str) -> None:
    with pytest.raises(BadSchema, match=match) as e:
        E.decode(data)
    assert e.value.code == 1000 and e.value.fault_name == "BAD_SCHEMA"
    if data.startswith(b"{") and b'"id"' in data:
        assert (e.value.id, e.value.reply_to, e.value.sender) == ("req-1", "chat", "chat")


def test_salvage_from_broken_json() -> None:
    with pytest.raises(BadSchema) as e:
        E.decode(b'{"id": "abc", "reply_to": "chat", "from": "cli", "payload": [}')
    assert (e.value.id, e.value.reply_to, e.value.sender) == ("abc", "chat", "cli")


def test_unknown_type_is_3000() -> None:
    with pytest.raises(UnknownType) as e:
        E.decode(_raw(type="gossip"))
    assert e.value.code == 3000 and e.value.id == "req-1"
    assert isinstance(e.value, BadSchema)  # one except clause answers both


def test_size_limits() -> None:
    env = E.event("keeper", {"blob": "x" * 2000})
    with pytest.raises(MessageTooLarge):
        E.encode(env, limit=1000)
    with pytest.raises(BadSchema, match="at most 1000"):
        E.decode(E.encode(env), limit=1000)


def test_encode_refuses_invalid_envelopes() -> None:
    with pytest.raises(UnknownType):
        E.encode(E.Envelope("shout", "a", "b", {}))
    with pytest.raises(BadSchema):
        E.encode(E.Envelope("query", "", "b", {}))


def test_response_stream_error_cancel_builders() -> None:
    req = E.query("chat", "splinfer", {"text": "hi"}, reply_to="chat", trace="tr")
    resp = E.response(req, "splinfer", {"text": "hello"})
    assert (resp.id, resp.to, resp.type, resp.trace) == (req.id, "chat", "response", "tr")
    chunks = E.stream(req, "splinfer", [{"t": "a"}, {"t": "b"}, {"t": "c"}])
    assert [(c.id, c.seq, c.eof) for c in chunks] == [
        (req.id, 0, False), (req.id, 1, False), (req.id, 2, True)]
    err = E.error_reply(req, Backpressure("splinfer", 100, 10), sender="splinfer")
    assert err.type == "error" and err.id == req.id and err.to == "chat"
    assert err.payload["code"] == 4100 and err.payload["name"] == "BACKPRESSURE"
    assert set(err.payload) == {"code", "name", "message"}
    assert E.decode(E.encode(err)) == err
    c = E.cancel("chat", "splinfer", req.id, reply_to="chat")
    assert c.is_cancel and c.payload == {"op": "cancel", "target": req.id}
    assert E.decode(E.encode(c)).is_cancel
    f = E.fault(E.Fault.TTL_EXPIRED, "too late", sender="svc", to="chat", id="x")
    assert f.payload == {"code": 1001, "name": "TTL_EXPIRED", "message": "too late"}


def test_faults_table() -> None:
    assert {f.name: int(f) for f in E.Fault} == {
        "BAD_SCHEMA": 1000, "TTL_EXPIRED": 1001, "NOT_AUTHORIZED": 2000, "UNKNOWN_TYPE": 3000,
        "BACKPRESSURE": 4100, "STREAM_TIMEOUT": 4200, "INTERNAL_ERROR": 5000}
    for cls in BusFault.__subclasses__():
        assert E.Fault(cls.code).name == cls.fault_name
    assert TtlExpired("x").to_payload() == {"code": 1001, "name": "TTL_EXPIRED", "message": "x"}


def test_ttl_ms_beyond_one_day_or_with_an_impossible_ts_is_bad_schema() -> None:
    def raw(**fields: object) -> bytes:
        return json.dumps({"id": "x", "ts": "2026-11-26T07:29:00Z", "from": "a", "to": "b",
                           "type": "query", "payload": {}, "reply_to": "r", **fields}).encode()

    assert E.decode(raw(ttl_ms=86_400_000)).ttl_ms == 86_400_000
    with pytest.raises(BadSchema, match=r"'ttl_ms' is 18014398509481984; at most 86400000 "
                       r"\(one day\)") as huge:
        E.decode(raw(ttl_ms=2**54))
    assert (huge.value.id, huge.value.reply_to) == ("x", "r")  # it can be answered
    with pytest.raises(BadSchema, match="'ts' is not a valid time"):
        E.decode(raw(ttl_ms=1000, ts="2026-13-45T07:29:00Z"))


def test_ttl_expiry() -> None:
    env = E.query("a", "b", {}, ttl_ms=1000)
    assert not env.expired()
    assert env.expired(now=time.time() + 2)
    assert not E.query("a", "b", {}).expired(now=time.time() + 10**6)
