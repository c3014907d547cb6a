"""forget: the ciphertext gone from disk, a signed tombstone left, the chain still whole;
and nothing a person said is readable in any file the store writes."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from runa.alethia.store import Store, UnknownRecord, verify

from .helpers import Clock, turn

Open = Callable[..., Store]


def every_file(root: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file())


def ciphertext_of(root: Path, record_id: str) -> bytes:
    day, index = record_id.split("/")
    for line in (root / "days" / f"{day}.log").read_bytes().splitlines():
        fields = json.loads(line)
        if fields["t"] == "rec" and fields["i"] == int(index):
            return base64.b64decode(fields["c"])
    raise AssertionError(f"no line for {record_id}")


def test_a_forgotten_record_is_gone_from_disk_list_and_read(opener: Open, root: Path,
                                                             clock: Clock) -> None:
    store = opener()
    ids = [store.append("turn", turn(n)) for n in range(4)]
    clock.next_day()
    later = store.append("turn", turn(9))
    store.flush()
    gone = ciphertext_of(root, ids[1])
    raw = every_file(root)
    assert gone in raw or base64.b64encode(gone) in raw
    store.forget(ids[1])
    raw = every_file(root)
    assert gone not in raw and base64.b64encode(gone) not in raw
    assert [e.id for e in store.entries()] == [ids[0], ids[2], ids[3], later]
    with pytest.raises(UnknownRecord):
        store.read(ids[1])
    with pytest.raises(UnknownRecord):
        store.forget(ids[1])
    assert store.read(ids[2]).body["user"] == turn(2)["user"]
    store.close()
    report = verify(root)
    assert report.ok and report.forgotten == 1
    assert report.records == 4 + 1 + 1  # the tombstone is a record of today's chain
    again = opener()
    assert [e.id for e in again.entries()] == [ids[0], ids[2], ids[3], later]
    tombstone = again.read("2026-12-08/2")
    assert tombstone.entry.kind == "tombstone" and tombstone.body == {"forgot": ids[1]}


def test_forgetting_a_conversation_forgets_its_records(opener: Open, root: Path,
                                                       clock: Clock) -> None:
    store = opener()
    kept = store.append("turn", turn(0, "keep"))
    forgotten = [store.append("turn", turn(1, "drop"))]
    clock.next_day()
    forgotten.append(store.append("turn", turn(2, "drop")))
    assert store.forget_conversation("drop") == forgotten
    assert [e.id for e in store.entries()] == [kept]
    assert store.forget_conversation("drop") == []
    store.close()
    assert b"drop" not in every_file(root)
    assert verify(root).ok and verify(root).forgotten == 2


def test_a_tombstone_that_is_not_signed_is_named(opener: Open, root: Path) -> None:
    store = opener()
    record = store.append("turn", turn(0))
    store.append("turn", turn(1))
    store.forget(record)
    store.close()
    path = root / "days" / "2026-12-07.log"
    lines = path.read_bytes().splitlines(keepends=True)
    fields = json.loads(lines[1])
    fields["forgot"] = "00" * 64
    lines[1] = json.dumps(fields).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    assert [(p.index, p.kind) for p in verify(root).problems] == [(1, "signature")]


def test_nothing_said_is_readable_in_any_file(opener: Open, root: Path, clock: Clock) -> None:
    store = opener()
    for day in range(3):
        for n in range(5):
            store.append("turn", {"user": f"my secret pelican {day}-{n}",
                                  "answer": "the lighthouse opens at nine",
                                  "conversation": "conversation-zebra", "persona": "ottoman",
                                  "interventions": [{"rule": "r1"}], "feedback": "splendid"})
        clock.next_day()
    store.close()
    raw = every_file(root)
    assert raw
    for said in (b"pelican", b"lighthouse", b"zebra", b"ottoman", b"splendid"):
        assert said not in raw
