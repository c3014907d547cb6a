"""verify: a week of days, tampered with by hand; each change named with its day and index,
the untouched days verifying and reading as before. No key is needed."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from runa.alethia import chain
from runa.alethia.store import Store, verify

from .helpers import Clock, turn

Open = Callable[..., Store]
PER_DAY = 6


@pytest.fixture
def week(opener: Open, clock: Clock, root: Path) -> list[list[str]]:
    """Seven days of six turns each, the store closed; the ids by day."""
    store = opener()
    days = []
    for day in range(7):
        days.append([store.append("turn", turn(day * 10 + n, f"conv-{day}"))
                     for n in range(PER_DAY)])
        clock.next_day()
    store.close()
    return days


def day_file(root: Path, record_id: str) -> Path:
    return root / "days" / f"{record_id.split('/')[0]}.log"


def record_lines(path: Path) -> tuple[list[bytes], dict[int, int]]:
    """The file's lines and, by record index, the line's place."""
    lines = path.read_bytes().splitlines(keepends=True)
    places = {json.loads(line)["i"]: n for n, line in enumerate(lines)
              if json.loads(line)["t"] == "rec"}
    return lines, places


def test_an_untouched_week_verifies(week: list[list[str]], root: Path) -> None:
    report = verify(root)
    assert report.ok and report.days == 7 and report.records == 7 * PER_DAY
    assert report.unsigned == 0 and report.forgotten == 0 and len(report.public_key) == 64


def test_flipped_removed_swapped_and_inserted_records_are_each_named(
        week: list[list[str]], root: Path, opener: Open) -> None:
    flipped, removed, swapped, inserted = week[1][2], week[2][3], week[3][1], week[4][4]
    lines, places = record_lines(day_file(root, flipped))  # one byte of one ciphertext
    fields = json.loads(lines[places[3]])
    ciphertext = bytearray(base64.b64decode(fields["c"]))
    ciphertext[5] ^= 0x01
    fields["c"] = base64.b64encode(ciphertext).decode()
    lines[places[3]] = json.dumps(fields).encode() + b"\n"
    day_file(root, flipped).write_bytes(b"".join(lines))

    lines, places = record_lines(day_file(root, removed))
    del lines[places[4]]
    day_file(root, removed).write_bytes(b"".join(lines))

    lines, places = record_lines(day_file(root, swapped))
    lines[places[2]], lines[places[3]] = lines[places[3]], lines[places[2]]
    day_file(root, swapped).write_bytes(b"".join(lines))

    lines, places = record_lines(day_file(root, inserted))  # a forged record before 5
    forged = json.loads(lines[places[5]])
    forged["c"] = base64.b64encode(b"forged" * 8).decode()
    forged["h"] = chain.record_hash(base64.b64decode(forged["n"]), b"forged" * 8).hex()
    lines.insert(places[5], json.dumps(forged).encode() + b"\n")
    day_file(root, inserted).write_bytes(b"".join(lines))

    report = verify(root)
    assert {(p.day, p.index, p.kind) for p in report.problems} == {
        ("2026-12-08", 3, "altered"), ("2026-12-09", 4, "removed"),
        ("2026-12-10", 2, "reordered"), ("2026-12-11", 5, "inserted")}
    assert all(p.message and "lighthouse" not in p.message for p in report.problems)

    store = opener()  # the untouched days still open and read
    for day in (0, 5, 6):
        assert [store.read(i).body["user"] for i in week[day]] == [
            turn(day * 10 + n)["user"] for n in range(PER_DAY)]


def test_a_removed_day_is_named_by_the_next(week: list[list[str]], root: Path) -> None:
    day_file(root, week[2][0]).unlink()
    (root / "days" / "2026-12-09.key").unlink()
    report = verify(root)
    assert [(p.day, p.kind) for p in report.problems] == [("2026-12-10", "missing")]


def test_a_signature_that_does_not_verify_is_named(week: list[list[str]], root: Path) -> None:
    path = day_file(root, week[5][0])
    lines = path.read_bytes().splitlines(keepends=True)
    signature = json.loads(lines[-1])
    signature["sig"] = "00" * 64
    lines[-1] = json.dumps(signature).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    assert [(p.day, p.kind) for p in verify(root).problems] == [("2026-12-12", "signature")]


def test_a_rewritten_chain_fails_its_signature(week: list[list[str]], root: Path) -> None:
    """Someone without the signing key changes a record and recomputes every hash and link:
    the chain holds together, the signed head does not."""
    path = day_file(root, week[6][0])
    lines, places = record_lines(path)
    header = json.loads(lines[0])
    link = bytes.fromhex(header["prev"])
    for index in sorted(places):
        fields = json.loads(lines[places[index]])
        if index == 2:
            fields["c"] = base64.b64encode(b"x" * 40).decode()
        digest = chain.record_hash(base64.b64decode(fields["n"]), base64.b64decode(fields["c"]))
        link = chain.link(link, "2026-12-13", index, digest)
        fields["h"], fields["l"] = digest.hex(), link.hex()
        lines[places[index]] = json.dumps(fields).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    assert ("2026-12-13", "signature") in {(p.day, p.kind) for p in verify(root).problems}


def test_records_cut_from_a_days_end_are_named(week: list[list[str]], root: Path) -> None:
    path = day_file(root, week[1][0])
    lines, places = record_lines(path)
    path.write_bytes(b"".join(lines[:places[5]] + lines[-1:]))  # 5 and 6 gone, signature kept
    named = {(p.day, p.index, p.kind) for p in verify(root).problems}
    assert ("2026-12-08", 5, "removed") in named


def test_any_bit_flipped_anywhere_in_a_day_is_named_on_that_day(opener: Open, clock: Clock,
                                                                 root: Path) -> None:
    store = opener()
    store.append("turn", turn(0))
    store.append("turn", turn(1))
    store.forget("2026-12-07/1")
    clock.next_day()
    store.append("turn", turn(2))
    store.close()
    path = root / "days" / "2026-12-07.log"
    whole = path.read_bytes()
    for position in range(len(whole)):
        flipped = bytearray(whole)
        flipped[position] ^= 1 << (position % 8)
        path.write_bytes(bytes(flipped))
        report = verify(root)
        assert report.problems and report.problems[0].day == "2026-12-07", position
    path.write_bytes(whole)
    assert verify(root).ok
